"""The reliability and security battery's fixtures (its state and helpers are in battery.py).

Every case drives the edge_training DAG through the real scheduler, triggerer and executor of the
tests' shared Airflow (tests/conftest.py), injects its fault for real (a REST call a person would make,
a SIGKILL, a stopped service, a broken connection, bad data) and records what it expected and observed.
At the end the totals are counted at their sources (jobs in the AML double, versions in its model
registry, tags and digests in the registry, containers on the VM's Docker), written to
tests/faults/results.json and printed as one table.
"""

from __future__ import annotations

import json

import pytest

from devstack.aml.admin import AmlDoubleAdmin
from tests.faults.battery import (
    BATTERY,
    RESULTS,
    TRAINED_DATE,
    Battery,
    TrainingRun,
    fresh_partition,
    trigger,
    write_results,
)
from tests.faults.report import results_table


@pytest.fixture(scope="session")
def battery(airflow, stack_env) -> Battery:
    yield BATTERY
    write_results(stack_env)


def pytest_terminal_summary(terminalreporter):
    if not BATTERY.cases or not RESULTS.exists():
        return
    document = json.loads(RESULTS.read_text())
    terminalreporter.write_sep("=", "fault battery (tests/faults/results.json)")
    for line in results_table(document):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def trained_partition(airflow, battery) -> TrainingRun:
    """TRAINED_DATE trained through to its image with every connection right. Started when first asked
    for (the bad-input cases ask, so it trains while they run); the connection cases wait for it."""
    date = fresh_partition(TRAINED_DATE)
    return TrainingRun(date, trigger(airflow, date))


@pytest.fixture(scope="session")
def admin(stack_env) -> AmlDoubleAdmin:
    admin = AmlDoubleAdmin.from_env(stack_env)
    admin.clear_faults()
    return admin

