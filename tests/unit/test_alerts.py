"""Alerts for the people who watch the trainings: a task that failed for good, a run past its deadline.

Sent for real, on loopback: a webhook is an HTTP server in a thread that keeps what it was POSTed, email
goes through Airflow's SMTP notifier to an SMTP server in a thread that keeps what it was sent. A failed
task's alert is raised by Airflow's own task runner (``inprocess_airflow``) calling the DAG's
``on_failure_callback`` with the real context; a missed deadline's by Airflow's own ``CallbackTrigger``
(what the triggerer runs) with the context the scheduler builds, over a stand-in of the triggerer's
channel to the API server that keeps task states and XComs.
"""

from __future__ import annotations

import asyncio
import email
import html
import json
import socketserver
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import AsyncCallback, DeadlineReference
from azure.core.exceptions import ClientAuthenticationError

from edge_training.exceptions import AlertDeliveryError
from edge_training.hooks.azureml import AzureMLHook
from edge_training.notifications import alerts
from edge_training.notifications.alerts import (
    EVENT_RUN_LATE,
    EVENT_TASK_FAILED,
    Alert,
    AlertTarget,
    EdgeAlertNotifier,
    error_line,
)
from edge_training.operators import gate as gate_operators
from tests.unit.inprocess_airflow import InMemoryExecutionAPI

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "edge_training"
RUN_ID = "scheduled__2026-11-11T00:00:00+00:00"
PARTITION_KEY = "2026-11-10T00:00:00"
JOB = "edge_training-2026-11-10-9f2c4e1ab37d0c55"
JOB_URL = f"https://ml.azure.com/runs/{JOB}?wsid=/subscriptions/sub-1/resourceGroups/edge-rg/workspaces/edge-ws"
AADSTS = "Authentication failed: AADSTS7000215: Invalid client secret provided.\nTrace ID: 0c4e6a18"


# --- a webhook and an SMTP server, on loopback -------------------------------------------------------
class Webhook:
    """An HTTP endpoint that keeps every POST (path, headers, JSON body) and answers ``status``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                      "json": json.loads(body)})
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T0KEN-in-the-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpServer:
    """Enough of SMTP (RFC 5321, no TLS, no auth) for smtplib to deliver; keeps each message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        box = self

        class Session(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                self.reply("220 mail.example.test ESMTP")
                sender, recipients = None, []
                while line := self.rfile.readline():
                    command = line.decode().strip()
                    verb = command.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 mail.example.test")
                    elif verb == "MAIL":
                        sender, recipients = command.split(":", 1)[1].strip(" <>"), []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        recipients.append(command.split(":", 1)[1].strip(" <>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk
                        box.messages.append({"from": sender, "to": recipients,
                                             "message": email.message_from_bytes(data)})
                        self.reply("250 OK queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("250 OK")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Session)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch) -> Iterator[Webhook]:
    hook = Webhook()
    monkeypatch.setenv("EDGE_ALERT_TARGET", hook.url)
    yield hook
    hook.close()


@pytest.fixture
def smtp_server(monkeypatch) -> Iterator[SmtpServer]:
    server = SmtpServer()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": server.port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.test"},
    }))
    yield server
    server.close()


@pytest.fixture(scope="module")
def dag():
    return load_dag()


def load_dag():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[DAG_ID]


# --- a task that failed for good ---------------------------------------------------------------------
class WorkspaceRefusingTheSecret(AzureMLHook):
    """The real hook whose identity provider refuses the connection's secret (AADSTS7000215)."""

    def get_conn(self):
        raise ClientAuthenticationError(message=AADSTS)


def run_after_training() -> InMemoryExecutionAPI:
    """A run of 2026-11-10 whose submit_training finished and pushed its result and job link."""
    api = InMemoryExecutionAPI(dag_id=DAG_ID, run_id=RUN_ID, partition_key=PARTITION_KEY)
    api.push("submit_training", "job_name", JOB)
    api.push("submit_training", "azureml_job_url", JOB_URL)
    return api


def test_a_task_that_fails_for_good_posts_its_alert_to_the_webhook(dag, webhook, monkeypatch):
    monkeypatch.setattr(gate_operators, "AzureMLHook", WorkspaceRefusingTheSecret)

    outcome = run_after_training().run(dag.get_task("evaluate_gate"), try_number=1)

    assert outcome.state == "failed"
    [post] = webhook.received
    assert post["path"] == "/hooks/T0KEN-in-the-path" and post["content_type"] == "application/json"
    body = post["json"]
    assert body["event"] == EVENT_TASK_FAILED
    assert (body["dag_id"], body["run_id"], body["partition"]) == (DAG_ID, RUN_ID, "2026-11-10")
    assert body["tasks"] == [{"task_id": "evaluate_gate", "state": "failed"}] and body["try_number"] == 1
    # The error's first line, as the task log shows it (the SDK's own type and message).
    assert body["error"] == "ClientAuthenticationError: Authentication failed: AADSTS7000215: Invalid client " \
                            "secret provided."
    task_url = f"/dags/{DAG_ID}/runs/{quote(RUN_ID)}/tasks/evaluate_gate?try_number=1"
    assert body["links"]["Airflow task"].endswith(task_url)
    assert body["links"]["Azure ML job"] == JOB_URL  # pushed upstream by submit_training
    for line in ("task evaluate_gate failed", "partition 2026-11-10", body["error"], JOB_URL):
        assert line in body["text"]


def test_a_try_that_will_be_retried_sends_nothing(dag, webhook, monkeypatch):
    class Throttled(AzureMLHook):
        def get_conn(self):
            raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(gate_operators, "AzureMLHook", Throttled)

    assert run_after_training().run(dag.get_task("evaluate_gate"), try_number=1).state == "up_for_retry"
    assert webhook.received == []


def logged(caplog, capsys) -> str:
    """What was logged, whether logging went to pytest's handler or (once Airflow's task runner has
    configured structlog in this process) to stdout."""
    return "\n".join(r.getMessage() for r in caplog.records) + capsys.readouterr().out


def test_with_no_target_the_alert_goes_to_the_log(monkeypatch, caplog, capsys):
    monkeypatch.delenv("EDGE_ALERT_TARGET", raising=False)
    alert = failed_alert()

    with caplog.at_level("WARNING"):
        EdgeAlertNotifier().send(alert, {})

    assert f"EDGE ALERT {alert.title}" in logged(caplog, capsys)


def test_a_webhook_that_refuses_gets_the_alert_logged_and_the_error_raised(webhook, caplog, capsys):
    webhook.status = 500
    alert = failed_alert()

    with pytest.raises(AlertDeliveryError, match=r"alert webhook at 127\.0\.0\.1 answered HTTP 500") as err:
        EdgeAlertNotifier().send(alert, {})

    assert "T0KEN" not in str(err.value)  # a webhook's path often is its secret
    text = logged(caplog, capsys)
    assert alert.error in text and "T0KEN" not in text


def test_an_email_target_sends_through_airflows_smtp_notifier(smtp_server, monkeypatch):
    monkeypatch.setenv("EDGE_ALERT_TARGET", "mailto:ops@example.test, data-ops@example.test")
    alert = failed_alert()

    EdgeAlertNotifier().send(alert, {})

    [mail] = smtp_server.messages
    assert mail["to"] == ["ops@example.test", "data-ops@example.test"] and mail["from"] == "airflow@example.test"
    assert mail["message"]["Subject"] == alert.title
    body = next(part for part in mail["message"].walk() if part.get_content_type() == "text/html")
    assert alert.error in html.unescape(body.get_payload(decode=True).decode())


def failed_alert(**fields: Any) -> Alert:
    values = {"event": EVENT_TASK_FAILED, "dag_id": DAG_ID, "run_id": RUN_ID, "partition": "2026-11-10",
              "tasks": (("validate_partition", "failed"),), "try_number": 1,
              "error": "StackHubAuthError: Stack Hub account https://edgedata.blob.local.azurestack.external:47101/ "
                       "(connection 'stackhub_blob') refused the credentials: 403 AuthorizationFailure",
              "links": {"Airflow task": "http://127.0.0.1:47180/dags/edge_training/runs/x/tasks/validate_partition"}}
    return Alert(**{**values, **fields})


def test_an_alert_shows_one_line_per_fact_whatever_the_run_was_given():
    """A bad partition param or a multi-line message cannot forge or spill lines into the alert."""
    context = {
        "ti": SimpleNamespace(dag_id=DAG_ID, run_id=RUN_ID, task_id="validate_partition", state="failed",
                              try_number=2, log_url="http://airflow/t",
                              xcom_pull=lambda **_: None),
        "dag_run": SimpleNamespace(partition_key=PARTITION_KEY),
        "params": {"partition": "2026-11-01\r\nPartition: 2026-11-02"},
        "exception": ValueError("first line\nsecond line"),
    }

    alert = alerts.failure_alert(context)

    assert alert.partition == "2026-11-01\\r\\nPartition: 2026-11-02"
    assert alert.error == "ValueError: first line"
    assert [line.split(":")[0] for line in alert.text.splitlines()] == [
        "[edge_training, partition 2026-11-01\\r\\nPartition", "Run", "Task", "Error", "Airflow task"]


@pytest.mark.parametrize(
    ("text", "kind"),
    [("", "log"), ("  ", "log"), ("https://hooks.example.test/services/T0/B0/x", "webhook"),
     ("http://127.0.0.1:9/alerts", "webhook"), ("ops@example.test", "email"),
     ("mailto:a@example.test;b@example.test", "email")],
)
def test_the_target_setting(text, kind):
    assert AlertTarget.parse(text).kind == kind


@pytest.mark.parametrize("text", ["ops", "smtp.example.test", "ftp://x/y", "https://", "a@b, nobody"])
def test_a_target_that_is_none_of_those_is_refused(text):
    with pytest.raises(ValueError, match="EDGE_ALERT_TARGET"):
        AlertTarget.parse(text)


def test_a_bad_target_is_an_import_error_of_the_dag(monkeypatch):
    monkeypatch.setenv("EDGE_ALERT_TARGET", "ops-team")
    bag = DagBag(dag_folder=str(REPO / "dags" / "edge_training.py"))
    assert "EDGE_ALERT_TARGET" in str(bag.import_errors)


def test_error_line_keeps_the_type_and_the_first_line():
    assert error_line(None) is None
    assert error_line(KeyError()) == "KeyError"
    assert error_line("Task heartbeat timed out\nmore") == "Task heartbeat timed out"


def test_the_failure_alert_is_every_tasks_on_failure_callback(dag):
    callbacks = {t.task_id: t.on_failure_callback for t in dag.tasks}
    assert all(isinstance(c, list) and any(isinstance(n, EdgeAlertNotifier) for n in c) for c in callbacks.values())


# --- a run past its deadline -------------------------------------------------------------------------
def test_a_run_deadline_is_refused_with_the_reason_while_it_would_break_clearing_runs(monkeypatch):
    """Airflow 3.3.2 answers 500 to clearing a task of a run with a queued-at deadline: off by default,
    and a non-zero setting is an import error naming the setting and the reason."""
    monkeypatch.delenv("EDGE_RUN_DEADLINE_MINUTES", raising=False)
    assert not load_dag().deadline
    monkeypatch.setenv("EDGE_RUN_DEADLINE_MINUTES", "45")
    bag = DagBag(dag_folder=str(REPO / "dags" / "edge_training.py"))
    error = str(bag.import_errors)
    assert "EDGE_RUN_DEADLINE_MINUTES=45" in error and "clearing a task" in error


def test_the_deadline_once_allowed_is_counted_from_queueing_and_survives_serialization(monkeypatch):
    """Ready for an Airflow that clears such runs: what the DAG processor would store is what the scheduler
    reads back to create the run's deadline."""
    from airflow.serialization.serialized_objects import DagSerialization

    monkeypatch.setattr("edge_training.notifications.alerts.QUEUED_AT_DEADLINES_SAFE", True)
    monkeypatch.setenv("EDGE_RUN_DEADLINE_MINUTES", "45")
    dag = load_dag()
    [deadline] = dag.deadline
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert deadline.interval == timedelta(minutes=45)
    assert isinstance(deadline.callback, AsyncCallback)  # runs in the triggerer
    [stored] = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag)))).deadline
    assert stored["reference"] == {"reference_type": "DagRunQueuedAtDeadline"}
    assert stored["interval"]["__data__"] == timedelta(minutes=45).total_seconds()
    assert stored["callback"]["__data__"] == {"path": "edge_training.notifications.alerts.EdgeAlertNotifier",
                                              "kwargs": {"job_link_tasks": ["submit_training"]}}


class TriggererChannel:
    """The triggerer's channel to the API server, as a deadline callback uses it: task states and XComs
    of the runs it knows (``SUPERVISOR_COMMS.asend``)."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, str | None]] = {}
        self.xcoms: dict[tuple[str, str, str], Any] = {}

    async def asend(self, msg: Any) -> Any:
        from airflow.sdk.execution_time.comms import GetTaskStates, GetXCom, TaskStatesResult, XComResult
        from airflow.sdk.execution_time.xcom import XCom

        await asyncio.sleep(0)
        if isinstance(msg, GetTaskStates):
            return TaskStatesResult(task_states={r: self.states.get(r, {}) for r in msg.run_ids or ()})
        if isinstance(msg, GetXCom):
            value = self.xcoms.get((msg.run_id, msg.task_id, msg.key))
            return XComResult(key=msg.key, value=None if value is None else XCom.serialize_value(value))
        raise AssertionError(f"a deadline callback has no business sending {type(msg).__name__}")


@pytest.fixture
def triggerer_channel(monkeypatch) -> TriggererChannel:
    from airflow.sdk.execution_time import task_runner

    channel = TriggererChannel()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", channel, raising=False)
    return channel


def deadline_context(run_id: str = RUN_ID, conf: dict | None = None) -> dict[str, Any]:
    """What the scheduler hands a missed deadline's callback (``Deadline.handle_miss``): the run as the
    REST API shows it, and the deadline."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse

    queued = datetime(2026, 11, 11, 0, 0, 5, tzinfo=timezone.utc)
    run = SimpleNamespace(
        run_id=run_id, dag_id=DAG_ID, logical_date=None, queued_at=queued, start_date=queued, end_date=None,
        duration=None, data_interval_start=None, data_interval_end=None, run_after=queued,
        last_scheduling_decision=queued, run_type="scheduled", state="running", triggered_by="timetable",
        triggering_user_name=None, conf=conf or {}, note=None, dag_versions=[], bundle_version=None,
        dag_model=SimpleNamespace(dag_display_name=DAG_ID), partition_key=PARTITION_KEY,
        partition_date=datetime(2026, 11, 10, tzinfo=timezone.utc),
    )
    return {"dag_run": DAGRunResponse.model_validate(run).model_dump(mode="json"),
            "deadline": {"id": str(uuid.uuid4()), "deadline_time": queued + timedelta(minutes=120)}}


def allowed_deadline(minutes: float = 120):
    """The DAG's deadline as run_deadline builds it where Airflow allows it (see run_deadline)."""
    from edge_training.notifications import alerts

    saved, alerts.QUEUED_AT_DEADLINES_SAFE = alerts.QUEUED_AT_DEADLINES_SAFE, True
    try:
        return alerts.run_deadline(minutes, job_link_tasks=["submit_training"])
    finally:
        alerts.QUEUED_AT_DEADLINES_SAFE = saved


async def fire(deadline, context: dict[str, Any]) -> list[dict[str, Any]]:
    """What the triggerer does with a missed deadline's AsyncCallback: Airflow's CallbackTrigger."""
    from airflow.triggers.callback import CallbackTrigger

    data = deadline.callback.serialize()
    trigger = CallbackTrigger(callback_path=data["path"], callback_kwargs={**data["kwargs"], "context": context})
    return [event.payload async for event in trigger.run()]


async def test_a_missed_deadline_reports_the_partition_the_running_task_and_the_job_link(
        dag, webhook, triggerer_channel):
    triggerer_channel.states[RUN_ID] = {
        "check_edge_vm": "success", "validate_partition": "success", "submit_training": "deferred",
        "evaluate_gate": None, "summary": None,
    }
    triggerer_channel.xcoms[(RUN_ID, "submit_training", "azureml_job_url")] = JOB_URL

    events = await fire(allowed_deadline(), deadline_context())

    assert [e["state"] for e in events] == ["running", "success"], events
    [post] = webhook.received
    body = post["json"]
    assert body["event"] == EVENT_RUN_LATE
    assert (body["dag_id"], body["run_id"], body["partition"]) == (DAG_ID, RUN_ID, "2026-11-10")
    assert body["tasks"] == [{"task_id": "submit_training", "state": "deferred"}]
    assert body["deadline"].startswith("2026-11-11T02:00:05")
    assert body["links"]["Azure ML job"] == JOB_URL
    assert body["links"]["Airflow run"].endswith(f"/dags/{DAG_ID}/runs/scheduled__2026-11-11T00%3A00%3A00%2B00%3A00")
    assert body["links"]["Airflow task"].endswith("/tasks/submit_training")
    for fact in ("run missed its deadline", "partition 2026-11-10", "Running: submit_training (deferred)", JOB_URL):
        assert fact in body["text"]


async def test_a_late_manual_run_names_the_partition_it_was_given_and_what_waits(
        dag, webhook, triggerer_channel):
    run_id = "manual__2026-11-20T09:00:00+00:00"
    triggerer_channel.states[run_id] = {"check_edge_vm": "up_for_retry", "validate_partition": None}

    await fire(allowed_deadline(), deadline_context(run_id, conf={"partition": "2026-11-03"}))

    body = webhook.received[0]["json"]
    assert body["partition"] == "2026-11-03"
    assert body["tasks"] == [{"task_id": "check_edge_vm", "state": "up_for_retry"}]
    assert "Azure ML job" not in body["links"]  # no job yet


async def test_a_deadline_alert_still_goes_out_when_airflow_cannot_be_asked(dag, webhook, monkeypatch):
    """No channel to the API server (or it fails): the alert carries the run and its link, not the tasks."""
    from airflow.sdk.execution_time import task_runner

    monkeypatch.delattr(task_runner, "SUPERVISOR_COMMS", raising=False)

    events = await fire(allowed_deadline(), deadline_context())

    assert events[-1]["state"] == "success"
    body = webhook.received[0]["json"]
    assert body["partition"] == "2026-11-10" and body["tasks"] == []
    assert "no task is running or waiting" in body["text"]
