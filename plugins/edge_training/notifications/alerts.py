"""Alerts for the people who watch the trainings: a task failed, or a partition's run missed its deadline.

One notifier (Airflow's ``BaseNotifier``) serves both: the DAG's ``on_failure_callback`` calls it in the
worker when a task fails for good (not on a try that will be retried), and the run's ``DeadlineAlert``
awaits it in the triggerer (``AsyncCallback``, the documented way to run a notifier on a missed deadline).
An alert names the partition, the task(s), the error's first line and the links: the Airflow task or run,
and the AML job when a task has pushed its link (XCom ``azureml_job_url``).

Where it goes is one setting, ``EDGE_ALERT_TARGET``, read when the alert is sent (give it to every worker
and to the triggerer): empty, the log of whatever sends it (the failed task's log; the triggerer's log for
a deadline); ``http(s)://...``, a JSON POST (its ``text`` field suits Slack and Teams incoming webhooks);
one or more email addresses (``ops@example.com``, ``mailto:a@x,b@y``), Airflow's SMTP notifier on the
SMTP connection Airflow is configured with (``[email] email_conn_id``, ``smtp_default``).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from airflow.sdk import AsyncCallback, BaseNotifier, DeadlineAlert, DeadlineReference

from edge_training.exceptions import AlertDeliveryError
from edge_training.links.azureml import AzureMLJobLink
from edge_training.partitions import partition_date_str

ALERT_TARGET_ENV = "EDGE_ALERT_TARGET"
#: Task states that mean "still going" when a deadline passes.
ACTIVE_STATES = ("running", "deferred", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "restarting")
EVENT_TASK_FAILED = "task_failed"
EVENT_RUN_LATE = "run_deadline_missed"

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


def printable(text: str, limit: int = 500) -> str:
    """One line a person can read safely: control characters escaped (a key with ``\\r\\n`` cannot forge
    lines of the alert), cut at ``limit`` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def error_line(exception: Any) -> str | None:
    """``ExceptionType: first line of its message`` (the line the task log shows), or None."""
    if exception is None:
        return None
    if isinstance(exception, str):
        lines = exception.splitlines()
        return printable(lines[0].strip()) if lines else None
    first = next((line.strip() for line in str(exception).splitlines() if line.strip()), "")
    name = type(exception).__name__
    return printable(f"{name}: {first}" if first else name)


def partition_of(requested: Any, key: Any) -> str | None:
    """The partition a run trains: the ``partition`` param when given, else the run's partition key."""
    chosen = requested or key
    if not chosen:
        return None
    try:
        return partition_date_str(chosen)
    except Exception:  # noqa: BLE001 - an alert about a bad key still goes out, showing the key
        return printable(str(chosen), 100)


def airflow_url(dag_id: str, run_id: str, task_id: str | None = None) -> str:
    """The run's (or one task's) page in the Airflow UI, from ``[api] base_url``."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    url = f"{base}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"
    return f"{url}/tasks/{quote(task_id)}" if task_id else url


# --- where alerts go ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertTarget:
    """A parsed ``EDGE_ALERT_TARGET``: ``log``, ``webhook`` (a URL) or ``email`` (recipients)."""

    kind: str
    url: str = ""
    recipients: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> AlertTarget:
        text = (text or "").strip()
        if not text:
            return cls("log")
        if text.lower().startswith(("http://", "https://")):
            if not urlsplit(text).hostname:
                raise ValueError(f"{ALERT_TARGET_ENV}: webhook URL without a host: expected http(s)://host/path")
            return cls("webhook", url=text)
        addresses = text[len("mailto:"):] if text.lower().startswith("mailto:") else text
        recipients = tuple(a.strip() for a in re.split(r"[,;]", addresses) if a.strip())
        if recipients and all(_EMAIL.match(a) for a in recipients):
            return cls("email", recipients=recipients)
        raise ValueError(
            f"{ALERT_TARGET_ENV}={printable(text, 80)!r}: expected empty (the log), an http(s):// webhook URL "
            "or email address(es) (ops@example.com, mailto:a@example.com,b@example.com)"
        )

    @classmethod
    def from_env(cls) -> AlertTarget:
        return cls.parse(os.environ.get(ALERT_TARGET_ENV))

    def describe(self) -> str:
        """For log lines: a webhook's scheme and host only (its path often holds a token)."""
        if self.kind == "webhook":
            parts = urlsplit(self.url)
            return f"webhook {parts.scheme}://{parts.hostname}"
        if self.kind == "email":
            return "email to " + ", ".join(self.recipients)
        return "the log"


# --- what an alert says ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """One alert: what happened, to which partition's run, the task(s), the error and the links."""

    event: str
    dag_id: str
    run_id: str
    partition: str | None
    tasks: tuple[tuple[str, str | None], ...]  # (task_id, state)
    error: str | None = None
    links: Mapping[str, str] = field(default_factory=dict)
    try_number: int | None = None
    deadline: str | None = None

    @property
    def title(self) -> str:
        where = f"{self.dag_id}, partition {self.partition or '(none)'}"
        if self.event == EVENT_RUN_LATE:
            return f"[{where}] run missed its deadline"
        task = self.tasks[0][0] if self.tasks else "a task"
        return f"[{where}] task {task} failed"

    @property
    def text(self) -> str:
        lines = [self.title, f"Run: {self.run_id}"]
        if self.event == EVENT_RUN_LATE:
            lines.append(f"Deadline: {self.deadline or 'unknown'}")
            running = ", ".join(f"{task} ({state})" for task, state in self.tasks)
            lines.append(f"Running: {running or 'no task is running or waiting'}")
        else:
            task, state = self.tasks[0] if self.tasks else ("unknown", None)
            attempt = f", try {self.try_number}" if self.try_number else ""
            lines.append(f"Task: {task} ({state or 'failed'}{attempt})")
            lines.append(f"Error: {self.error or 'none given'}")
        lines += [f"{label}: {url}" for label, url in self.links.items()]
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body; ``text`` is the whole alert as lines (what chat webhooks show)."""
        return {
            "event": self.event,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "partition": self.partition,
            "tasks": [{"task_id": task, "state": state} for task, state in self.tasks],
            "try_number": self.try_number,
            "error": self.error,
            "deadline": self.deadline,
            "links": dict(self.links),
            "title": self.title,
            "text": self.text,
        }

    def html(self) -> str:
        return f"<pre>{html.escape(self.text)}</pre>"


def failure_alert(context: Mapping[str, Any], *, job_link_tasks: Sequence[str] = ()) -> Alert:
    """The alert for a task that failed for good, from the task's own context (in the worker)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    params = context.get("params") or {}
    dag_id = str(getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", ""))
    run_id = str(getattr(ti, "run_id", None) or getattr(dag_run, "run_id", ""))
    task_id = str(getattr(ti, "task_id", "unknown"))
    links: dict[str, str] = {}
    try:
        links["Airflow task"] = ti.log_url
    except Exception:  # noqa: BLE001 - a task instance without a URL (a callback run outside a worker)
        links["Airflow task"] = airflow_url(dag_id, run_id, task_id)
    if job_url := _pulled_job_link(ti, _job_link_sources(context, task_id, job_link_tasks)):
        links["Azure ML job"] = job_url
    return Alert(
        event=EVENT_TASK_FAILED,
        dag_id=dag_id,
        run_id=run_id,
        partition=partition_of(params.get("partition"), getattr(dag_run, "partition_key", None)),
        tasks=((task_id, _state(getattr(ti, "state", None))),),
        error=error_line(context.get("exception")),
        links=links,
        try_number=getattr(ti, "try_number", None),
    )


async def deadline_alert(context: Mapping[str, Any], *, job_link_tasks: Sequence[str] = ()) -> Alert:
    """The alert for a run past its deadline, from the context Airflow gives a deadline callback
    (``{"dag_run": <the run as the REST API shows it>, "deadline": {...}}``), in the triggerer.

    The run's unfinished tasks and the AML job link are asked of Airflow through the triggerer's own
    channel (task states and XComs); an alert still goes out, with less, when that fails.
    """
    dag_run = context.get("dag_run") or {}
    dag_id = str(dag_run.get("dag_id", ""))
    run_id = str(dag_run.get("dag_run_id") or dag_run.get("run_id") or "")
    states = await _run_task_states(dag_id, run_id)
    active = tuple((task, state) for task, state in sorted(states.items()) if state in ACTIVE_STATES)
    links = {"Airflow run": airflow_url(dag_id, run_id)}
    if active:
        links["Airflow task"] = airflow_url(dag_id, run_id, active[0][0])
    if job_url := await _stored_job_link(dag_id, run_id, [task for task, _ in active] + list(job_link_tasks)):
        links["Azure ML job"] = job_url
    deadline = (context.get("deadline") or {}).get("deadline_time")
    if isinstance(deadline, datetime):
        deadline = deadline.isoformat()
    return Alert(
        event=EVENT_RUN_LATE,
        dag_id=dag_id,
        run_id=run_id,
        partition=partition_of((dag_run.get("conf") or {}).get("partition"), dag_run.get("partition_key")),
        tasks=active,
        links=links,
        deadline=str(deadline) if deadline else None,
    )


def _state(state: Any) -> str | None:
    value = getattr(state, "value", state)
    return str(value) if value else None


def _job_link_sources(context: Mapping[str, Any], task_id: str, named: Sequence[str]) -> list[str]:
    """Tasks that may have pushed an AML job link by now: among the ``named`` ones and those showing the
    link, the failed task and those upstream of it (a downstream task has not run yet)."""
    dag = context.get("dag")
    task = context.get("task")
    if dag is None or task is None:
        return [task_id, *named]
    ran = {task_id} | set(task.get_flat_relative_ids(upstream=True))
    showing = [t.task_id for t in dag.tasks if any(isinstance(link, AzureMLJobLink) for link in t.operator_extra_links)]
    return [t for t in _first_unique([*showing, *named]) if t in ran]


def _first_unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _pulled_job_link(ti: Any, task_ids: Iterable[str]) -> str | None:
    for task_id in _first_unique(task_ids):
        try:
            url = ti.xcom_pull(task_ids=task_id, key=AzureMLJobLink.key)
        except Exception:  # noqa: BLE001 - the alert matters more than one of its links
            continue
        if url:
            return str(url)
    return None


async def _run_task_states(dag_id: str, run_id: str) -> dict[str, str | None]:
    try:
        from airflow.sdk.execution_time.comms import GetTaskStates
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        result = await SUPERVISOR_COMMS.asend(GetTaskStates(dag_id=dag_id, run_ids=[run_id]))
        return dict((result.task_states or {}).get(run_id, {}))
    except Exception:  # noqa: BLE001 - the alert goes out without the task list
        log.warning("Could not read the task states of run %s of %s", run_id, dag_id, exc_info=True)
        return {}


async def _stored_job_link(dag_id: str, run_id: str, task_ids: Iterable[str]) -> str | None:
    from airflow.sdk.execution_time.xcom import XCom

    for task_id in _first_unique(task_ids):
        try:
            url = await XCom.aget_one(
                key=AzureMLJobLink.key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1
            )
        except Exception:  # noqa: BLE001 - the alert matters more than one of its links
            continue
        if url:
            return str(url)
    return None


# --- sending ---------------------------------------------------------------------------------------
def post_json(url: str, payload: Mapping[str, Any], *, timeout_s: float) -> int:
    """POST the alert as JSON; the HTTP status, or AlertDeliveryError (naming the host, not the path)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "edge-training-alerts"},
    )
    host = urlsplit(url).hostname
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) only (parse)
            return response.status
    except urllib.error.HTTPError as err:
        raise AlertDeliveryError(f"alert webhook at {host} answered HTTP {err.code}: expected 2xx") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise AlertDeliveryError(f"alert webhook at {host} is not reachable: {reason}") from None


def send_email(alert: Alert, recipients: Sequence[str], context: Mapping[str, Any]) -> None:
    """Through Airflow's SMTP notifier, on Airflow's configured SMTP connection."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk.configuration import conf

    SmtpNotifier(
        to=list(recipients),
        from_email=conf.get("email", "from_email", fallback=None) or None,
        subject=alert.title,
        html_content=alert.html(),
    ).notify(dict(context))


class EdgeAlertNotifier(BaseNotifier):
    """Tells the people who watch the trainings that a task failed or a partition's run is late.

    As ``on_failure_callback`` it reports the failed task (partition, task, error's first line, the task's
    Airflow link and the AML job link); as a ``DeadlineAlert``'s ``AsyncCallback`` it reports the late
    run (partition, the tasks still running, the run's link and the AML job link). If sending fails, the
    alert is written to the log with the reason, and the error is raised for Airflow to record.

    :param target: where alerts go, in ``EDGE_ALERT_TARGET``'s form; None: that variable, read when an alert
        is sent.
    :param job_link_tasks: tasks whose AML job link an alert carries when the failed or running task pushed
        none (the DAG names ``submit_training``).
    :param timeout_s: how long a webhook may take to answer, in seconds.
    :param context: Airflow's context; given by the deadline machinery when it builds the notifier.
    """

    template_fields = ()

    def __init__(
        self,
        *,
        target: str | None = None,
        job_link_tasks: Sequence[str] = (),
        timeout_s: float = 10.0,
        context: Any = None,
    ) -> None:
        super().__init__(context=context)
        self.target = target
        self.job_link_tasks = list(job_link_tasks)
        self.timeout_s = timeout_s

    def resolved_target(self) -> AlertTarget:
        return AlertTarget.from_env() if self.target is None else AlertTarget.parse(self.target)

    def notify(self, context: Any) -> None:
        """A task failed for good (``on_failure_callback``, in the worker)."""
        self.send(failure_alert(context, job_link_tasks=self.job_link_tasks), context)

    async def async_notify(self, context: Any) -> None:
        """A run missed its deadline (``AsyncCallback``, in the triggerer)."""
        alert = await deadline_alert(context, job_link_tasks=self.job_link_tasks)
        await asyncio.to_thread(self.send, alert, context)

    def send(self, alert: Alert, context: Mapping[str, Any]) -> None:
        target = self.resolved_target()
        try:
            if target.kind == "webhook":
                post_json(target.url, _redacted(alert.payload()), timeout_s=self.timeout_s)
            elif target.kind == "email":
                send_email(alert, target.recipients, context)
            else:
                self.log.warning("EDGE ALERT %s", _redacted(alert.text))
                return
        except Exception as err:
            self.log.error("EDGE ALERT (not sent to %s: %s) %s", target.describe(), err, _redacted(alert.text))
            raise
        self.log.info("Alert sent to %s: %s", target.describe(), alert.title)


def _redacted(value: Any) -> Any:
    """Mask the secrets Airflow knows of in this process (connection passwords...), as task logs do."""
    try:
        from airflow.sdk.log import redact
    except ImportError:  # pragma: no cover - older SDKs
        return value
    return redact(value)


def run_deadline(minutes: float, *, job_link_tasks: Sequence[str] = ()) -> DeadlineAlert | None:
    """The run's deadline: it must finish ``minutes`` after it was queued, or EdgeAlertNotifier reports
    it from the triggerer. None when ``minutes`` is 0 (no deadline).

    Refused for now: on Airflow 3.3.2, clearing any task of a run that carries a ``DAGRUN_QUEUED_AT``
    deadline fails (HTTP 500; ``_recalculate_dagrun_queued_at_deadlines`` reads the stored interval as
    seconds and finds a dict), and the fault battery saw a marked-failed deferred task keep its AML job
    running while deadline callbacks ran in the triggerer. A deadline that breaks clear and cancel is
    worse than none, so a non-zero setting is an import error that says so.
    """
    if minutes < 0:
        raise ValueError(f"run deadline must be >= 0 minutes (0: none), found {minutes:g}")
    if minutes == 0:
        return None
    if not QUEUED_AT_DEADLINES_SAFE:
        raise DeadlineUnavailableError(
            f"EDGE_RUN_DEADLINE_MINUTES={minutes:g}: run deadlines are disabled on this Airflow; with a "
            "DAGRUN_QUEUED_AT deadline, Airflow 3.3.2 answers HTTP 500 to clearing a task of the run "
            "(TypeError in _recalculate_dagrun_queued_at_deadlines). Set it to 0 (the default)."
        )
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(EdgeAlertNotifier, kwargs={"job_link_tasks": list(job_link_tasks)}),
        name="edge_run_deadline",
    )


#: Whether this Airflow can clear runs that carry a queued-at deadline (see ``run_deadline``).
QUEUED_AT_DEADLINES_SAFE = False


class DeadlineUnavailableError(ValueError):
    """A run deadline was asked for where it would break clearing runs."""
