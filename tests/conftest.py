"""Shared test set-up: the stack's env file, Airflow's home, and markers by folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.util import parse_env_file

REPO = Path(__file__).resolve().parent.parent
STACK_ENV = REPO / ".devstack" / "stack.env"

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
