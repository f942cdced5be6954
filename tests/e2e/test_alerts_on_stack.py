"""Alerts through a real scheduler, triggerer and executor: a task that fails for good, a run past its deadline.

An Airflow of its own (port 47183, SQLite), so its settings touch no other test: every run's deadline is
two minutes after it was queued (``EDGE_RUN_DEADLINE_MINUTES=2``, time to reach the deferral) and alerts
go to a webhook on loopback (``EDGE_ALERT_TARGET``), an HTTP server in this process that keeps what it is POSTed.

- A run given a partition that does not exist: validate_partition fails on its first try (a data error
  is not retried) and its on_failure_callback POSTs the alert: partition, task, error, links.
- A run whose AML job works for minutes (the AML double's slow_job fault): the scheduler sees the deadline
  pass and the triggerer runs the DeadlineAlert's callback, which POSTs the late run's partition, the task
  still running (submit_training, deferred) and the AML job's link.

Partitions 2026-10-20/21 are outside the seeded month and the battery's dates, so no other test's counts move.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.aml.admin import AmlDoubleAdmin
from devstack.airflow_local import LocalAirflow
from devstack.seed import delete_partition, seed_partition
from tests.e2e.support import DAG_ID

SLOW_DATE = "2026-10-20"  # trained slowly: its run misses the deadline
MISSING_DATE = "2026-10-21"  # never written: validate_partition fails
RUN_KEY = "2026-11-01T00:00:00"  # the runs' partition key; the partition param names the data
JOB_HOLD_S = 300


class AlertInbox:
    """A webhook on loopback that keeps each alert POSTed to it."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                inbox.alerts.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, event: str, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for alert in self.alerts:
                if alert["event"] == event and alert["run_id"] == run_id:
                    return alert
            time.sleep(1)
        raise AssertionError(f"no {event} alert for {run_id} after {timeout:.0f}s; got {self.alerts}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def inbox():
    box = AlertInbox()
    yield box
    box.close()


@pytest.fixture(scope="module")
def alerting_airflow(stack_env, inbox):
    instance = LocalAirflow(name="airflow-alerts", port=47183,
                            extra_env={"EDGE_RUN_DEADLINE_MINUTES": "2", "EDGE_ALERT_TARGET": inbox.url})
    try:
        instance.reset()
        instance.start()
        instance.wait_dag_parsed(DAG_ID)
        yield instance
    finally:
        instance.stop()


def trigger(airflow: LocalAirflow, partition: str) -> str:
    run_id = f"alerts__{partition}__{time.time_ns()}"
    airflow.trigger(DAG_ID, partition_key=RUN_KEY, run_id=run_id, conf={"partition": partition})
    return run_id


def end_run(airflow: LocalAirflow, run_id: str) -> None:
    quoted = urllib.parse.quote(run_id, safe="")
    if airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{quoted}")["state"] not in ("success", "failed"):
        airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{quoted}", {"state": "failed"})


def test_a_missing_partition_fails_at_once_and_alerts(alerting_airflow, inbox):
    delete_partition(MISSING_DATE)
    run_id = trigger(alerting_airflow, MISSING_DATE)
    try:
        alert = inbox.wait("task_failed", run_id, timeout=300)
    finally:
        end_run(alerting_airflow, run_id)

    ti = alerting_airflow.task_instances(DAG_ID, run_id)["validate_partition"]
    assert (ti["state"], ti["try_number"]) == ("failed", 1)  # a data error spends no retry
    assert alert["partition"] == MISSING_DATE
    assert alert["tasks"] == [{"task_id": "validate_partition", "state": "failed"}]
    assert alert["error"].startswith("PartitionIncompleteError: ") and MISSING_DATE in alert["error"]
    assert f"/runs/{urllib.parse.quote(run_id)}/tasks/validate_partition" in alert["links"]["Airflow task"]


def test_a_run_past_its_deadline_is_reported_with_the_running_task_and_the_job_link(
        alerting_airflow, inbox, stack_env):
    admin = AmlDoubleAdmin.from_env(stack_env)
    seed_partition(SLOW_DATE, rows=1500 + random.randrange(3000))  # new data: a new job
    fault = admin.add_fault(rf"^PUT .*/jobs/{DAG_ID}-{SLOW_DATE}-", "slow_job", delay=JOB_HOLD_S)
    run_id = trigger(alerting_airflow, SLOW_DATE)
    try:
        alert = inbox.wait("run_deadline_missed", run_id, timeout=JOB_HOLD_S)
        job_url = alerting_airflow.xcom(DAG_ID, run_id, "submit_training", "azureml_job_url")
    finally:
        end_run(alerting_airflow, run_id)  # the trigger's on_kill cancels the job
        admin.remove_fault(fault)
        delete_partition(SLOW_DATE)

    assert alert["partition"] == SLOW_DATE
    assert {"task_id": "submit_training", "state": "deferred"} in alert["tasks"]
    assert alert["links"]["Azure ML job"] == job_url
    assert alert["deadline"] and "run missed its deadline" in alert["text"]
