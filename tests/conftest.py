"""Shared test set-up: the stack's env file, Airflow's home, and markers by folder."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STACK_ENV = REPO / ".devstack" / "stack.env"

os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".devstack" / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def read_stack_env(path: Path = STACK_ENV) -> dict[str, str]:
    """Parse .devstack/stack.env (KEY=value lines, shell quoting)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw)
        values[key.strip()] = parts[0] if parts else ""
    return values


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
