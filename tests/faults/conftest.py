"""The reliability and security battery's fixtures (its state and helpers are in battery.py).

Every case drives the edge_training DAG through the real scheduler, triggerer and executor of the
tests' shared Airflow (tests/conftest.py), injects its fault for real (a REST call a person would make,
a SIGKILL, a stopped service, a broken connection, bad data) and records what it expected and observed.
At the end the totals are counted at their sources (jobs in the AML double, versions in its model
registry, tags and digests in the registry, containers on the VM's Docker), written to
tests/faults/results.json and printed as one table.

The cases that only watch their own runs run side by side (tests/faults/side_by_side.py), started
together at the battery's first test; the others ask for ``alone`` and run one at a time after them.
"""

from __future__ import annotations

import json
from pathlib import Path

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
from tests.faults.side_by_side import CASES, SideBySideGroup

#: The side-by-side cases this session selected (a case left out by -k or a node id is not started).
SELECTED: list[str] = []
#: The group once started, so the battery's last test can end it.
STARTED_GROUP: list[SideBySideGroup] = []
FAULTS_DIR = Path(__file__).parent


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected: only the cases this session runs start
def pytest_collection_modifyitems(config, items):
    SELECTED[:] = [item.originalname for item in items if item.originalname in CASES]


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



@pytest.fixture(scope="session")
def side_by_side_group(airflow, battery, admin, stack_env, registry, alert_inbox) -> SideBySideGroup:
    """The selected side-by-side cases, started together; they share one AML client (the SDK's clients
    are safe across threads) and give the edge_vm pool its slots back when the last one ends."""
    from edge_training.hooks.azureml import AzureMLHook

    hook = AzureMLHook(azureml_conn_id="azureml_default")
    fixtures = {"airflow": airflow, "battery": battery, "admin": admin, "stack_env": stack_env,
                "registry": registry, "ml_client": hook.get_conn(), "alert_inbox": alert_inbox}
    group = SideBySideGroup(SELECTED, fixtures, airflow, on_finish=hook.close)
    STARTED_GROUP.append(group)
    try:
        group.start()
        yield group
    finally:
        group.finish()


def pytest_runtest_teardown(item, nextitem):
    """The battery's last test ends the group, not the session's end: its open AML hook holds the SDK's
    process-wide cloud setting, which the tests after the battery expect restored."""
    if STARTED_GROUP and (nextitem is None or FAULTS_DIR not in nextitem.path.parents):
        STARTED_GROUP[0].finish()


@pytest.fixture(scope="session", autouse=True)
def start_side_by_side_cases(request) -> None:
    """Start them at the battery's first test, whichever it is, so they run beside the bad inputs."""
    if SELECTED:
        request.getfixturevalue("side_by_side_group")


@pytest.fixture
def alone(side_by_side_group) -> None:
    """For a case that stops a shared service, kills an Airflow component or breaks a shared connection:
    it waits until no side-by-side case is running."""
    side_by_side_group.finish()
