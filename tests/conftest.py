"""Shared test set-up: the stack's env file, Airflow's home, and markers by folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devstack.util import STACK_ENV_FILE as STACK_ENV
from devstack.util import export_stack_env, read_stack_env

REPO = Path(__file__).resolve().parent.parent
#: submit_training's execution_timeout in the tests' Airflow (see the fault battery's timeout case).
TRAINING_TASK_TIMEOUT_MINUTES = 2
#: Runs of the DAG active at once in the tests' Airflow: the battery runs its side-by-side cases together.
MAX_ACTIVE_RUNS = 24
#: The tests' Airflow notices a finished AML job within this (the deployment default is 15 s): each training
#: of the suite ends sooner, and nothing the tests check depends on the poll rate.
AML_POLL_MAX_SECONDS = 5
#: The tests' Airflow's metadata database on the stack's Postgres (devstack/scale.py).
E2E_DATABASE = "airflow_e2e"
#: The OpenLineage namespace of the tests' Airflow; its events go to files in its home's OPENLINEAGE_DIR.
OPENLINEAGE_NAMESPACE = "edge-e2e"
OPENLINEAGE_DIR = "openlineage"

os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".devstack" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


export_stack_env(read_stack_env())


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The running stack's variables; integration tests fail (not skip) when the stack is not up."""
    if not STACK_ENV.exists():
        pytest.fail(f"{STACK_ENV} not found: run `make stack-up` first (make test does it for you)")
    return read_stack_env()


@pytest.fixture(scope="session")
def alert_inbox():
    """Where the tests' Airflow sends its alerts (a webhook on loopback in this process)."""
    from tests.alert_inbox import AlertInbox

    inbox = AlertInbox()
    yield inbox
    inbox.close()


@pytest.fixture(scope="session")
def airflow(stack_env, alert_inbox):
    """LocalExecutor + Postgres, on its own home and port so a running `make demo` is left alone.

    One start-up serves the e2e tests and the fault battery (tests/faults), which runs after them.
    Postgres, not SQLite: the battery runs its cases side by side, and SQLite answers concurrent
    triggers with "database is locked".
    """
    from devstack import scale
    from devstack.airflow_local import LocalAirflow
    from devstack.lineage_files import file_transport_env

    started = scale.up(redis=False)
    # Connections live in the metadata DB so the fault battery can break and restore them through the
    # REST API; the training task's time limit is short enough for the battery to see it pass; runs are
    # not capped at the DAG's default 4 (the pool still bounds the trainings); jobs are polled faster;
    # alerts go to the inbox.
    instance = LocalAirflow(name="airflow-e2e", port=47181, connections="db",
                            sql_alchemy_conn=scale.database(E2E_DATABASE),
                            extra_env={"EDGE_TRAINING_TASK_TIMEOUT_MINUTES": str(TRAINING_TASK_TIMEOUT_MINUTES),
                                       "EDGE_TRAINING_MAX_ACTIVE_RUNS": str(MAX_ACTIVE_RUNS),
                                       "EDGE_AML_POLL_MAX_SECONDS": str(AML_POLL_MAX_SECONDS),
                                       "EDGE_ALERT_TARGET": alert_inbox.url})
    # OpenLineage events go to files (devstack/lineage_files.py), read back by the lineage test.
    events = instance.home / OPENLINEAGE_DIR
    instance.extra_env.update(file_transport_env(events, OPENLINEAGE_NAMESPACE))
    try:
        instance.reset()  # runs from an earlier session would change what a backfill creates
        # and a production model (a `make demo` deploys one) would change what the gates let through
        from tests.e2e.support import clear_production_marks

        clear_production_marks()
        shutil.rmtree(events, ignore_errors=True)  # and so would their lineage
        events.mkdir(parents=True)
        instance.start()
        instance.wait_dag_parsed("edge_training")
        yield instance
    finally:
        instance.stop()
        scale.down(only=started)


@pytest.fixture
def ml_client(stack_env):
    """The real azure-ai-ml client on the stack's AML double (through the project's hook).

    Per test: an open hook holds the SDK's process-wide cloud setting, which later tests expect
    to find restored once every hook is closed.
    """
    from edge_training.hooks.azureml import AzureMLHook

    hook = AzureMLHook(azureml_conn_id="azureml_default")
    try:
        yield hook.get_conn()
    finally:
        hook.close()


@pytest.fixture(scope="session")
def registry(stack_env):
    from tests.e2e.support import Registry

    return Registry(stack_env)
