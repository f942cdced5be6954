"""Run one task through Airflow's own task runner, in this process, against an in-memory Execution API.

Airflow's ``run_task_in_process`` (what ``dag.test()`` uses) runs a task the way a worker does: it renders
the templates, executes, then decides the outcome (the task's ``retry_policy``, ``AirflowFailException``,
the retries left) and runs the callbacks (``on_failure_callback``) with the real context. Its API client
is given a transport that answers like the API server: it keeps XComs and the task state store and
records the state the runner reports. No metadata database, scheduler or network is involved.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from airflow.sdk.api.client import Client
from airflow.sdk.api.datamodels._generated import TaskInstance as WorkloadTaskInstance
from airflow.sdk.execution_time.supervisor import run_task_in_process
from airflow.sdk.execution_time.xcom import XCom

_RUN = re.compile(r"^/task-instances/(?P<ti>[^/]+)/(?P<op>run|state)$")
_XCOM = re.compile(r"^/xcoms/(?P<dag>[^/]+)/(?P<run>[^/]+)/(?P<task>[^/]+)/(?P<key>[^/]+)(?P<slice>/slice)?$")
_STORE = re.compile(r"^/store/ti/(?P<ti>[^/]+)/(?P<key>[^/]+)$")


@dataclass
class Outcome:
    """What one try ended as: the runner's state and error, and the end it reported to the API."""

    state: str
    error: BaseException | None
    reported: dict[str, Any]


@dataclass
class InMemoryExecutionAPI:
    """The Execution API of one DAG run, as the task runner talks to it."""

    dag_id: str
    run_id: str
    partition_key: str | None = None
    conf: dict[str, Any] = field(default_factory=dict)
    #: Tries a task may take beyond the first (the task's ``retries`` as the scheduler counts them).
    max_tries: int = 2
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    store: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: What the runner reported as each task instance's end (the body of PATCH .../state), by ti id.
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)
    try_numbers: dict[str, int] = field(default_factory=dict)

    def push(self, task_id: str, key: str, value: Any) -> None:
        """An XCom an upstream task pushed, stored as the API server stores it (serialized)."""
        self.xcoms[(task_id, key)] = XCom.serialize_value(value)

    def pulled(self, task_id: str, key: str) -> Any:
        stored = self.xcoms.get((task_id, key))
        return None if stored is None else json.loads(json.dumps(stored))

    def _run_context(self, ti_id: str) -> dict[str, Any]:
        now = datetime.now(timezone.utc).isoformat()
        try_number = self.try_numbers.get(ti_id, 1)
        return {
            "dag_run": {
                "dag_id": self.dag_id, "run_id": self.run_id, "logical_date": None,
                "data_interval_start": None, "data_interval_end": None, "run_after": now, "start_date": now,
                "end_date": None, "run_type": "manual", "state": "running", "conf": self.conf,
                "consumed_asset_events": [], "partition_key": self.partition_key,
            },
            "max_tries": self.max_tries + 1,
            # As the API server decides: a retry is possible while tries remain.
            "should_retry": try_number <= self.max_tries,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if match := _RUN.match(path):
            if match["op"] == "run":
                return httpx.Response(200, json=self._run_context(match["ti"]))
            self.reported[match["ti"]] = json.loads(request.content)
            return httpx.Response(204)
        if match := _XCOM.match(path):
            key = (match["task"], match["key"])
            if match["slice"]:  # every map index's value: one for an unmapped task, none if not pushed
                return httpx.Response(200, json=[self.xcoms[key]] if key in self.xcoms else [])
            if request.method == "GET":
                if key not in self.xcoms:
                    return httpx.Response(404, json={"detail": {"reason": "not_found"}})
                return httpx.Response(200, json={"key": match["key"], "value": self.xcoms[key]})
            if request.method == "POST":
                self.xcoms[key] = json.loads(request.content)
                return httpx.Response(201, json={"ok": True})
        if match := _STORE.match(path):
            key = (match["ti"], match["key"])
            if request.method == "GET":
                if key not in self.store:
                    return httpx.Response(404, json={"detail": {"reason": "not_found"}})
                return httpx.Response(200, json={"key": match["key"], "value": self.store[key]})
            if request.method == "PUT":
                self.store[key] = json.loads(request.content)["value"]
                return httpx.Response(204)
            self.store.pop(key, None)
            return httpx.Response(204)
        if path.endswith("/validate-inlets-and-outlets"):  # a task with outlets asks first: all are active
            return httpx.Response(200, json={"inactive_assets": []})
        if request.method == "GET":
            return httpx.Response(404, json={"detail": {"reason": "not_found", "path": path}})
        return httpx.Response(200, json={"ok": True})

    def run(self, task: Any, *, try_number: int = 1) -> Outcome:
        """Run ``task`` (from a parsed DAG) once, as try ``try_number``."""
        ti_id = uuid.uuid4()
        self.try_numbers[str(ti_id)] = try_number
        workload = WorkloadTaskInstance(
            id=ti_id, task_id=task.task_id, dag_id=self.dag_id, run_id=self.run_id,
            try_number=try_number, map_index=-1, dag_version_id=uuid.uuid4(),
        )
        client = Client(base_url="http://execution-api.invalid/", token="", transport=httpx.MockTransport(self.handle))
        result = run_task_in_process(ti=workload, task=task, client=client)
        state = getattr(result.state, "value", result.state)
        return Outcome(state=str(state), error=result.error, reported=self.reported.get(str(ti_id), {}))
