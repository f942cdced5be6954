"""Helpers shared by the AML integration tests and bench/aml_polling.py (the AML double, real SDK).

Nothing here stands in for a stack service: jobs run on the double and the edge VM. What is
simulated is only Airflow's own runtime around an operator (a task instance that records XCom
pushes, a task state store kept in a JSON file so it survives a killed process).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edge_training.hooks.azureml import AzureMLHook, JobState

JOB_SCRIPT = textwrap.dedent(
    """\
    import sys, time
    lines, pause, code = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    for i in range(lines):
        print(f"edge-test line {i} of {lines}", flush=True)
        time.sleep(pause)
    if code:
        print(f"edge-test deliberate failure, exit {code}", file=sys.stderr, flush=True)
        sys.exit(code)
    print("edge-test done", flush=True)
    """
)


def write_job_code(folder: Path) -> str:
    """A tiny job: prints numbered lines with pauses, then exits with the code it is given."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.py").write_text(JOB_SCRIPT)
    return str(folder)


def job_command(lines: int, pause: float, exit_code: int = 0) -> str:
    return f"python3 job.py {lines} {pause} {exit_code}"


def unique_fingerprint() -> str:
    """The double keeps its state across runs: each test works on its own data fingerprint."""
    return uuid.uuid4().hex


class RecordingTI:
    """The bits of a task instance the operators touch: XCom pushes, recorded."""

    map_index = -1
    try_number = 1
    stats_tags: dict[str, str] = {}

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class FileTaskStateStore:
    """Airflow 3.3's task_state_store interface (get/set/delete), kept in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._read().get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        data = self._read()
        data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def delete(self, key: str) -> None:
        data = self._read()
        data.pop(key, None)
        self.path.write_text(json.dumps(data))


def make_context(dag: Any, *, partition: str, store: Any = None, ti: RecordingTI | None = None) -> dict[str, Any]:
    return {
        "ti": ti or RecordingTI(),
        "dag": dag,
        "run_id": f"manual__{partition}",
        "dag_run": SimpleNamespace(partition_key=partition, run_id=f"manual__{partition}"),
        "task_state_store": store,
    }


def execute_task(task: Any, context: dict[str, Any]) -> Any:
    """What the task runner does with an operator: render its templates, then execute it."""
    task.render_template_fields(context)
    return task.execute(context)


def wait_for_status(hook: AzureMLHook, name: str, statuses: set[str], timeout: float = 120.0) -> JobState:
    deadline = time.time() + timeout
    job = hook.get_job(name)
    while job.status not in statuses:
        if time.time() > deadline:
            raise AssertionError(f"AML job {name} stayed {job.status}, expected one of {sorted(statuses)}")
        time.sleep(0.5)
        job = hook.get_job(name)
    return job


def jobs_named(hook: AzureMLHook, prefix: str) -> list[str]:
    """Names of the workspace's jobs that start with ``prefix`` (the SDK's own jobs.list)."""
    return sorted(j.name for j in hook.client.jobs.list() if j.name.startswith(prefix))


def run_trigger(trigger: Any, timeout: float = 300.0) -> dict[str, Any]:
    """Drive a trigger's async run() to its first event, the way the triggerer does."""

    async def first() -> dict[str, Any]:
        agen = trigger.run()
        try:
            event = await asyncio.wait_for(agen.__anext__(), timeout)
        finally:
            await agen.aclose()
        return event.payload

    return asyncio.run(first())
