"""Shared test set-up: the stack's env file, Airflow's home, and markers by folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.util import parse_env_file

REPO = Path(__file__).resolve().parent.parent
STACK_ENV = REPO / ".devstack" / "stack.env"
#: submit_training's execution_timeout in the tests' Airflow (see the fault battery's timeout case).
TRAINING_TASK_TIMEOUT_MINUTES = 2

os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".devstack" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def read_stack_env(path: Path = STACK_ENV) -> dict[str, str]:
    """Parse .devstack/stack.env with the same parser that wrote it."""
    return parse_env_file(path.read_text())


if STACK_ENV.exists():
    for _key, _value in read_stack_env().items():
        os.environ.setdefault(_key, _value)


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
def airflow(stack_env):
    """LocalExecutor + SQLite, on its own home and port so a running `make demo` is left alone.

    One start-up serves the e2e tests and the fault battery (tests/faults), which runs after them.
    """
    from devstack.airflow_local import LocalAirflow

    # Connections live in the metadata DB so the fault battery can break and restore them through the
    # REST API; the training task's time limit is short enough for the battery to see it pass.
    instance = LocalAirflow(name="airflow-e2e", port=47181, connections="db",
                            extra_env={"EDGE_TRAINING_TASK_TIMEOUT_MINUTES": str(TRAINING_TASK_TIMEOUT_MINUTES)})
    instance.reset()  # runs from an earlier session would change what a backfill creates
    instance.start()
    try:
        instance.wait_dag_parsed("edge_training")
        yield instance
    finally:
        instance.stop()


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
