"""The triggers' run(), on_kill() and serialisation, against fakes that behave, with no stack.

``AzureMLJobTrigger`` builds its hook from the module's ``AzureMLHook`` and ``BaseHook.aget_connection``;
both are replaced here. The hook the trigger gets is the real ``AzureMLHook`` (its error translation,
Retry-After parsing, log offsets and cancel logic all run) with a scripted AML workspace behind it
instead of azure-ai-ml: jobs move through their statuses as time passes, their log grows, the service
can be down, throttle or refuse, and a cancel really stops the job.

``StackHubPartitionTrigger`` keeps its real hook, settings and locality policy; only the async
``BlobServiceClient`` class the hook builds is replaced, by a fake storage account whose blobs appear
at given times.

Every event either trigger sends is checked against the one event vocabulary (``triggers.events``).

Time is a fake clock: both trigger modules see it as ``time`` and as ``asyncio.sleep``, so a test
asserts the delays the triggers asked for (Retry-After, backoff, deadlines) without waiting.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import types
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Self

import pytest
import requests
import structlog
from airflow.sdk import Connection
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransportResponse

import edge_training.triggers.azureml as aml_trigger
import edge_training.triggers.stackhub_blob as blob_trigger
from edge_training.exceptions import AzureMLJobFailedError, AzureMLJobTimeoutError
from edge_training.hooks.azureml import LOGGING_STATUSES, TERMINAL_STATUSES, AzureMLHook
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.hooks.stackhub_blob import PartitionSpec, StackHubBlobHook
from edge_training.operators.azureml import AzureMLSubmitJobOperator
from edge_training.triggers.azureml import LOG_OFFSET_XCOM_KEY, AzureMLJobTrigger, first_event
from edge_training.triggers.events import (
    EVENT_ERROR,
    EVENT_FAILED,
    EVENT_STATUSES,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
)
from edge_training.triggers.stackhub_blob import StackHubPartitionTrigger

_real_sleep = asyncio.sleep

T0 = 1_800_000_000.0
JOB = "edge_training-2026-11-10-abc"
DOMAIN = "local.azurestack.external"
AML_CONN = Connection(
    conn_id="azureml_default",
    conn_type="azureml",
    extra=json.dumps({"subscription_id": "sub", "resource_group": "rg", "workspace_name": "ws",
                      "auth_type": "default", "cloud": "public"}),
)
BLOB_CONN = Connection(
    conn_id="stackhub_blob",
    conn_type="wasb",
    extra=json.dumps({
        "connection_string": "DefaultEndpointsProtocol=https;AccountName=edgedata;AccountKey=c2VjcmV0;"
                             f"EndpointSuffix={DOMAIN}",
        "stack_hub_domain": DOMAIN,
    }),
)
PUBLIC_BLOB_CONN = Connection(
    conn_id="public_blob",
    conn_type="wasb",
    extra=json.dumps({
        "connection_string": "DefaultEndpointsProtocol=https;AccountName=edgedata;AccountKey=c2VjcmV0;"
                             "EndpointSuffix=core.windows.net",
        "stack_hub_domain": DOMAIN,
    }),
)
#: The task instance a deferred trigger belongs to (what the triggerer sets as ``trigger.task_instance``).
TI = types.SimpleNamespace(dag_id="edge_training", task_id="submit_training", run_id="scheduled__2026-11-10",
                           map_index=-1)
#: The message Airflow's triggerer cancels a trigger with when the user acted on its task.
USER_ACTION = "__airflow_user_action__"


# --- time -----------------------------------------------------------------------------------------
class FakeClock:
    """Wall and monotonic time for the trigger modules; ``sleep`` records the delay and moves time on.

    With ``park_after`` set, the first sleep asked for at or after that many seconds blocks (really)
    until the task is cancelled, as a trigger waiting between polls does when the triggerer acts.
    """

    def __init__(self) -> None:
        self.now = T0
        self.delays: list[float] = []
        self.park_after: float | None = None
        self.parked = asyncio.Event()

    @property
    def elapsed(self) -> float:
        return self.now - T0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float, result: Any = None) -> Any:
        self.delays.append(delay)
        if self.park_after is not None and self.elapsed >= self.park_after:
            self.parked.set()
            await _real_sleep(3600)
        self.now += max(0.0, delay)
        await _real_sleep(0)
        return result


class AsyncioWithFakeSleep:
    """The ``asyncio`` module as a trigger module sees it: everything real except ``sleep``."""

    def __init__(self, clock: FakeClock) -> None:
        self.sleep = clock.sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    for module in (aml_trigger, blob_trigger):
        monkeypatch.setattr(module, "time", fake)
        monkeypatch.setattr(module, "asyncio", AsyncioWithFakeSleep(fake))
    return fake


# --- azure-core errors, built like the SDK's ------------------------------------------------------
def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> RequestsTransportResponse:
    raw = requests.Response()
    raw.status_code = status
    raw.reason = HTTPStatus(status).phrase
    raw.headers.update(headers or {})
    raw._content = body
    return RequestsTransportResponse(None, raw)


def http_error(status: int, *, headers: dict[str, str] | None = None, cls: type[HttpResponseError] | None = None,
               code: str | None = None) -> HttpResponseError:
    if cls is None:
        cls = {401: ClientAuthenticationError, 403: ClientAuthenticationError, 404: ResourceNotFoundError}.get(
            status, HttpResponseError)
    code = code or HTTPStatus(status).phrase.replace(" ", "")
    body = json.dumps({"error": {"code": code, "message": f"the service answered {status}"}}).encode()
    return cls(response=_response(status, body, headers))


def outage_error(kind: int | str) -> Exception:
    if kind == "connection":
        return ServiceRequestError("Connection refused")
    if kind == "reset":
        return ServiceResponseError("Connection reset by peer")
    return http_error(int(kind))


# --- a scripted AML workspace ---------------------------------------------------------------------
@dataclass
class FakeJob:
    """An AML job: (seconds since T0, status) steps, and (seconds, text) fragments appended to its log."""

    name: str
    timeline: list[tuple[float, str]]
    log: list[tuple[float, str]] = field(default_factory=list)
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    def status(self, t: float) -> str:
        current = "NotStarted"
        for at, status in self.timeline:
            if at <= t:
                current = status
        return current

    def log_bytes(self, t: float) -> bytes:
        return "".join(text for at, text in self.log if at <= t).encode()

    def cancel(self, t: float) -> None:
        """What AML does on a cancel: the job stops now and writes no more log."""
        self.timeline = [(at, s) for at, s in self.timeline if at <= t] + [(t, "Canceled")]
        self.log = [(at, text) for at, text in self.log if at <= t]

    def when(self, statuses: frozenset[str] | set[str]) -> float | None:
        return next((at for at, s in self.timeline if s in statuses), None)


class FakeAML:
    """The AML service: jobs, run history, the log blob store, and the ways the service misbehaves."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.jobs: dict[str, FakeJob] = {}
        #: (start, end, kind): AML API requests in [start, end) fail with 503, a refused connection...
        self.outage: tuple[float, float, int | str] | None = None
        #: An HTTP status every AML API request gets (e.g. 403: the service principal lost its role).
        self.refusal: int | None = None
        #: (start, end, status): the log store answers with this status in [start, end).
        self.log_outage: tuple[float, float, int] | None = None
        #: The next AML API request is throttled with this Retry-After (seconds).
        self.throttle_next: int | None = None
        self.retry_after_ends: float | None = None
        #: When requests came in although the service had asked for a pause (Retry-After).
        self.requests_inside_retry_after: list[float] = []
        self.failed_requests = 0
        self.open_sessions = 0
        #: Every request the service and its log store got, as (seconds since T0, kind): "status"
        #: (jobs.get), "run_details" (run history) or "log" (a read of the log blob).
        self.requests: list[tuple[float, str]] = []
        #: How many clients (MLClient and its sessions) were built.
        self.clients_built = 0

    def add(self, job: FakeJob) -> FakeJob:
        self.jobs[job.name] = job
        return job

    # server side of every AML API request
    def _serve(self) -> float:
        t = self.clock.elapsed
        if self.retry_after_ends is not None and t < self.retry_after_ends:
            self.requests_inside_retry_after.append(t)
            self.failed_requests += 1
            raise http_error(429, headers={"Retry-After": str(int(self.retry_after_ends - t) + 1)})
        if self.throttle_next is not None:
            seconds, self.throttle_next = self.throttle_next, None
            self.retry_after_ends = t + seconds
            self.failed_requests += 1
            raise http_error(429, headers={"Retry-After": str(seconds)})
        if self.outage is not None and self.outage[0] <= t < self.outage[1]:
            self.failed_requests += 1
            raise outage_error(self.outage[2])
        if self.refusal is not None:
            self.failed_requests += 1
            raise http_error(self.refusal, code="AuthorizationFailed")
        return t

    def _job(self, name: str) -> FakeJob:
        if name not in self.jobs:
            raise http_error(404, code="UserError")
        return self.jobs[name]

    def get(self, name: str) -> Any:
        self.requests.append((self.clock.elapsed, "status"))
        t = self._serve()
        job = self._job(name)
        return types.SimpleNamespace(
            name=job.name,
            status=job.status(t),
            studio_url=f"https://ml.azure.com/runs/{job.name}",
            experiment_name="edge_training",
            tags={"partition": "2026-11-10"},
            outputs={k: types.SimpleNamespace(path=v) for k, v in job.outputs.items()},
            creation_context=types.SimpleNamespace(created_at=datetime.fromtimestamp(T0, UTC)),
        )

    def begin_cancel(self, name: str) -> Any:
        t = self._serve()
        job = self._job(name)
        if job.status(t) in TERMINAL_STATUSES:
            raise http_error(409, code="JobAlreadyEnded")
        job.cancel(t)
        return types.SimpleNamespace(result=lambda timeout=None: None)

    def get_run_details(self, name: str) -> Any:
        self.requests.append((self.clock.elapsed, "run_details"))
        t = self._serve()
        job = self._job(name)
        status = job.status(t)
        started = job.when(LOGGING_STATUSES)
        ended = job.when(TERMINAL_STATUSES)
        has_log = started is not None and started <= t
        inner = types.SimpleNamespace(code="UserError", message=job.error) if job.error else None

        def stamp(at: float | None) -> datetime | None:
            return datetime.fromtimestamp(T0 + at, UTC) if at is not None and at <= t else None

        return types.SimpleNamespace(
            status=status,
            log_files={"user_logs/std_log.txt": f"https://store.{DOMAIN}/logs/{name}/std_log.txt?sig=x"}
            if has_log else {},
            error=types.SimpleNamespace(error=inner) if inner else None,
            start_time_utc=stamp(started),
            end_time_utc=stamp(ended),
        )

    # the log blob store (run history hands out SAS URLs to it)
    def run(self, request: Any) -> Any:
        t = self.clock.elapsed
        self.requests.append((t, "log"))
        if self.log_outage is not None and self.log_outage[0] <= t < self.log_outage[1]:
            return types.SimpleNamespace(http_response=_response(self.log_outage[2]))
        name = request.url.split("/logs/", 1)[1].split("/", 1)[0]
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
        body = self.jobs[name].log_bytes(t)
        if start >= len(body):
            return types.SimpleNamespace(http_response=_response(416))
        return types.SimpleNamespace(http_response=_response(206, body[start:]))

    # sessions (what a leaked hook would leave open)
    def connect(self) -> Any:
        self.open_sessions += 1
        self.clients_built += 1
        run_history = types.SimpleNamespace(get_run_details=self.get_run_details)
        jobs = types.SimpleNamespace(get=self.get, begin_cancel=self.begin_cancel, _runs_operations=run_history)
        return types.SimpleNamespace(jobs=jobs)

    def disconnect(self) -> None:
        self.open_sessions -= 1


class FakeAzureMLHook(AzureMLHook):
    """The real hook, talking to a FakeAML instead of azure-ai-ml and its HTTP transport."""

    def __init__(self, *, service: FakeAML, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def _build_client(self) -> Any:
        return self.service.connect()

    def _log_http(self) -> Any:
        return self.service

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self.service.disconnect()


class FakeConnections:
    """Airflow's connection lookup as the triggers call it (``BaseHook.aget_connection``)."""

    def __init__(self, *connections: Connection) -> None:
        self.connections = {c.conn_id: c for c in connections}

    def add(self, connection: Connection) -> None:
        self.connections[connection.conn_id] = connection

    async def aget_connection(self, conn_id: str) -> Connection:
        from airflow.sdk.exceptions import AirflowNotFoundException

        if conn_id not in self.connections:
            raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")
        return self.connections[conn_id]


class FakeAirflow:
    """What a deferred trigger asks Airflow: its task's XComs and its task instance's state."""

    def __init__(self) -> None:
        self.xcoms: dict[tuple, Any] = {}
        self.ti_states: dict[tuple[str, str, str], str | None] = {}
        self.reachable = True

    async def aget_one(self, *, key, dag_id, task_id, run_id, map_index=None, include_prior_dates=False):
        return self.xcoms.get((dag_id, task_id, run_id, map_index, key))

    async def aset(self, key, value, *, dag_id, task_id, run_id, map_index=-1, **_):
        self.xcoms[(dag_id, task_id, run_id, map_index, key)] = json.loads(json.dumps(value))

    async def asend(self, msg):
        from airflow.sdk.execution_time.comms import TaskStatesResult

        if not self.reachable:
            raise ConnectionResetError("supervisor socket closed")
        states = {
            run_id: {tid: self.ti_states[(msg.dag_id, tid, run_id)]
                     for tid in msg.task_ids if (msg.dag_id, tid, run_id) in self.ti_states}
            for run_id in msg.run_ids
        }
        return TaskStatesResult(task_states={k: v for k, v in states.items() if v})

    def set_state(self, ti: Any, state: str | None) -> None:
        self.ti_states[(ti.dag_id, ti.task_id, ti.run_id)] = state

    def stored_offset(self, ti: Any) -> Any:
        return self.xcoms.get((ti.dag_id, ti.task_id, ti.run_id, ti.map_index, LOG_OFFSET_XCOM_KEY))


@pytest.fixture
def aml(monkeypatch, clock) -> FakeAML:
    service = FakeAML(clock)
    monkeypatch.setattr(aml_trigger, "AzureMLHook", functools.partial(FakeAzureMLHook, service=service))
    service.connections = FakeConnections(AML_CONN)
    monkeypatch.setattr(aml_trigger, "BaseHook", service.connections)
    return service


@pytest.fixture
def airflow_api(monkeypatch) -> FakeAirflow:
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.xcom import XCom

    api = FakeAirflow()
    monkeypatch.setattr(XCom, "aget_one", api.aget_one)
    monkeypatch.setattr(XCom, "aset", api.aset)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", api, raising=False)
    return api


def job_trigger(**kwargs: Any) -> AzureMLJobTrigger:
    return AzureMLJobTrigger(job_name=kwargs.pop("job_name", JOB), **kwargs)


def running_job(**kwargs: Any) -> FakeJob:
    """A job that starts at once and runs until canceled."""
    return FakeJob(JOB, [(0, "Running")], **kwargs)


def in_vocabulary(payload: dict[str, Any]) -> dict[str, Any]:
    """Every event of either trigger: a status of the shared vocabulary, a message, JSON-safe."""
    assert payload["status"] in EVENT_STATUSES, payload
    assert isinstance(payload["message"], str) and payload["message"], payload
    assert json.loads(json.dumps(payload)) == payload  # events are stored as JSON
    return payload


async def all_events(trigger) -> list[Any]:
    events = [event async for event in trigger.run()]
    for event in events:
        in_vocabulary(event.payload)
    return events


async def parked(clock: FakeClock, trigger) -> asyncio.Task:
    """Run the trigger in a task, as the triggerer does, until it waits between polls."""
    task = asyncio.create_task(all_events(trigger))
    await asyncio.wait_for(clock.parked.wait(), timeout=5)
    return task


async def kill_like_the_triggerer(task: asyncio.Task, trigger: AzureMLJobTrigger) -> None:
    """Airflow 3.3's triggerer on a mark-failed/success/clear: cancel run(), then await on_kill()."""
    task.cancel(USER_ACTION)
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(trigger.on_kill(), timeout=30)


def job_log_lines(logs: list[dict], job: str = JOB) -> list[str]:
    prefix = f"[{job}] "
    return [e["event"][len(prefix):] for e in logs if str(e.get("event", "")).startswith(prefix)]


def operator(service: FakeAML, **kwargs: Any) -> AzureMLSubmitJobOperator:
    """The operator that deferred to the trigger, with its own hook on the same fake workspace."""
    op = AzureMLSubmitJobOperator(task_id="submit_training", command="python3 train.py", environment="env:1",
                                  compute="edge-vm", **kwargs)
    op._hook = FakeAzureMLHook(service=service, azureml_conn_id=AML_CONN.conn_id, connection=AML_CONN)
    return op


# === AzureMLJobTrigger ============================================================================
async def test_a_completed_job_gives_one_event_that_the_operator_turns_into_its_result(aml, clock):
    aml.add(FakeJob(JOB, [(0, "Queued"), (20, "Running"), (95, "Completed")],
                    outputs={"model": "azureml://datastores/workspaceblobstore/paths/model/"}))

    events = await all_events(job_trigger(deadline=T0 + 3600, deadline_reason="job_timeout"))

    assert len(events) == 1
    payload = events[0].payload
    assert (payload["status"], payload["job_status"], payload["job_name"]) == (EVENT_SUCCESS, "Completed", JOB)
    assert payload["studio_url"] == f"https://ml.azure.com/runs/{JOB}"
    assert {"status", "job_name", "job_status", "studio_url", "message", "deadline_reason", "log_offset"} <= set(
        payload)
    assert 95 <= clock.elapsed <= 95 + PollPolicy().max_s  # the end is noticed within one capped interval
    assert aml.open_sessions == 0
    # The payload is what the operator's execute_complete reads.
    op = operator(aml)
    result = op.execute_complete(context={}, event=payload)
    assert result["job_name"] == JOB and result["status"] == "Completed"
    assert result["outputs"] == {"model": "azureml://datastores/workspaceblobstore/paths/model/"}
    assert result["duration_s"] == 75.0
    assert aml.open_sessions == 0


async def test_polling_ramps_up_to_the_cap(aml, clock):
    aml.add(FakeJob(JOB, [(0, "Running"), (200, "Completed")]))

    await all_events(job_trigger(stream_logs=False))

    policy = PollPolicy()
    for n, delay in enumerate(clock.delays):
        raw = policy.initial_s * policy.factor ** n
        if raw >= policy.max_s:
            assert delay == policy.max_s
        else:
            assert raw * (1 - policy.jitter) <= delay <= raw


@pytest.mark.parametrize("kind", [503, 502, "connection", "reset"])
async def test_a_transient_outage_is_waited_out_with_growing_backoff(aml, clock, kind):
    aml.add(FakeJob(JOB, [(0, "Running"), (120, "Completed")]))
    aml.outage = (0, 30, kind)

    events = await all_events(job_trigger(stream_logs=False))

    assert [e.payload["status"] for e in events] == [EVENT_SUCCESS]
    failures = aml.failed_requests
    assert failures >= 4  # 1 + 2 + 4 + 8 < 30: at least four tries fell inside the outage
    error_delays = clock.delays[:failures]
    # The n-th consecutive error waits in [2^(n-1), 2^n) s (PollPolicy: 2 s doubling, half jitter).
    for n, delay in enumerate(error_delays, start=1):
        assert 2 ** (n - 1) <= delay < 2**n
    assert error_delays == sorted(error_delays)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda aml: setattr(aml, "refusal", 403), "ClientAuthenticationError"),
        (lambda aml: setattr(aml, "refusal", 400), "HttpResponseError"),
        (lambda aml: aml.jobs.clear(), f"AML job '{JOB}' not found in workspace 'ws'"),
    ],
    ids=["forbidden", "bad-request", "job-not-found"],
)
async def test_a_non_transient_error_ends_the_wait_at_once(aml, clock, setup, expected):
    job = aml.add(running_job())
    setup(aml)

    events = await all_events(job_trigger(deadline=T0 + 3600))

    assert len(events) == 1
    assert events[0].payload["status"] == EVENT_ERROR
    assert expected in events[0].payload["message"]
    assert clock.delays == []  # no retry: every retry starts with a wait
    assert job.status(clock.elapsed) == "Running"  # an error is reported, the job is not touched
    assert aml.open_sessions == 0


async def test_transient_errors_beyond_the_budget_end_the_wait(aml, clock):
    aml.add(running_job())
    aml.outage = (0, 10_000, 503)

    events = await all_events(job_trigger(max_transient_errors=3))

    assert [e.payload["status"] for e in events] == [EVENT_ERROR]
    assert "gave up after transient errors" in events[0].payload["message"]
    assert "HTTP 503" in events[0].payload["message"]
    assert len(clock.delays) == 3 and aml.failed_requests == 4


@pytest.mark.parametrize("retry_after", [45, 120])
async def test_a_429_retry_after_is_honoured(aml, clock, retry_after):
    aml.add(FakeJob(JOB, [(0, "Running"), (200, "Completed")]))
    aml.throttle_next = retry_after

    events = await all_events(job_trigger(stream_logs=False))

    assert [e.payload["status"] for e in events] == [EVENT_SUCCESS]
    assert clock.delays[0] >= retry_after  # far above the 1-2 s a first error would wait
    assert aml.requests_inside_retry_after == []


async def test_retry_after_does_not_push_the_wait_past_the_deadline(aml, clock):
    job = aml.add(running_job())
    aml.throttle_next = 600

    events = await all_events(job_trigger(deadline=T0 + 100, deadline_reason="job_timeout"))

    assert [e.payload["status"] for e in events] == [EVENT_TIMEOUT]
    assert clock.delays[0] == pytest.approx(100) and clock.elapsed == pytest.approx(100)
    assert job.status(clock.elapsed) == "Running"  # still throttled at the deadline: the cancel could not go out
    assert events[0].payload["canceled"] is False and "cancel failed" in events[0].payload["message"]


@pytest.mark.parametrize(
    ("reason", "operator_kwargs", "limit"),
    [
        ("job_timeout", {"job_timeout": 300}, "job timeout 300.0 s"),
        ("execution_timeout", {"execution_timeout": timedelta(minutes=5)},
         "execution_timeout 0:05:00"),
    ],
)
async def test_the_deadline_cancels_the_job_and_the_event_names_the_limit(aml, clock, reason, operator_kwargs, limit):
    job = aml.add(FakeJob(JOB, [(0, "Queued"), (10, "Running"), (10_000, "Completed")]))

    events = await all_events(job_trigger(deadline=T0 + 300, deadline_reason=reason))

    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == EVENT_TIMEOUT and payload["deadline_reason"] == reason
    assert payload["canceled"] is True and payload["job_status"] == "Canceled"
    assert "passed its deadline and was canceled" in payload["message"]
    assert job.status(clock.elapsed) == "Canceled"
    assert clock.elapsed == pytest.approx(300)  # the last wait is cut at the deadline, not overshot
    assert aml.open_sessions == 0
    with pytest.raises(AzureMLJobTimeoutError, match=limit):
        operator(aml, **operator_kwargs).execute_complete(context={}, event=payload)


async def test_the_deadline_only_reports_when_told_not_to_cancel(aml, clock):
    job = aml.add(running_job())

    events = await all_events(job_trigger(deadline=T0 + 60, deadline_reason="job_timeout", cancel_on_timeout=False))

    payload = events[0].payload
    assert payload["status"] == EVENT_TIMEOUT and payload["canceled"] is False
    assert payload["job_status"] == "Running"
    assert job.status(clock.elapsed) == "Running"


async def test_a_deadline_inside_an_outage_fires_on_time(aml, clock):
    job = aml.add(running_job())
    aml.outage = (50, 10_000, 503)

    events = await all_events(job_trigger(deadline=T0 + 100, deadline_reason="execution_timeout"))

    payload = events[0].payload
    assert payload["status"] == EVENT_TIMEOUT and payload["deadline_reason"] == "execution_timeout"
    assert clock.elapsed == pytest.approx(100)  # backoff is cut at the deadline
    # AML is still down, so the cancel fails; the event says so instead of claiming a cancel.
    assert payload["canceled"] is False and "cancel failed" in payload["message"]
    assert payload["job_status"] == "Running"  # the last status seen
    assert job.status(clock.elapsed) == "Running"


async def test_a_failed_job_ends_the_wait_and_the_operator_raises_the_jobs_own_error(aml, clock):
    error = "ValueError: column 'vibration_rms' is missing from part-00003.csv"
    aml.add(FakeJob(JOB, [(0, "Running"), (40, "Failed")], log=[(5, "loading data\n"), (39, "Traceback ...\n")],
                    error=error))

    events = await all_events(job_trigger())

    assert len(events) == 1
    assert (events[0].payload["status"], events[0].payload["job_status"]) == (EVENT_FAILED, "Failed")
    assert "ended Failed" in events[0].payload["message"]
    with pytest.raises(AzureMLJobFailedError, match=error) as raised:
        operator(aml).execute_complete(context={}, event=events[0].payload)
    assert f"https://ml.azure.com/runs/{JOB}" in str(raised.value)


async def test_log_lines_are_shown_once_each_in_order(aml, clock):
    fragments = [(12, "epoch 1 loss 0.9\n"), (13, "epoch 2 loss 0.7\nepo"), (31, "ch 3 loss 0.5\n"),
                 (32, "saving model\n"), (58, "done")]  # the last line has no newline: shown at the end
    aml.add(FakeJob(JOB, [(0, "Queued"), (10, "Running"), (60, "Completed")], log=fragments))

    with structlog.testing.capture_logs() as logs:
        events = await all_events(job_trigger())

    assert job_log_lines(logs) == ["epoch 1 loss 0.9", "epoch 2 loss 0.7", "epoch 3 loss 0.5", "saving model", "done"]
    assert events[0].payload["log_offset"] == len("".join(text for _, text in fragments).encode())
    assert len(clock.delays) > 4  # the lines really came over several polls


async def test_no_log_is_read_when_told_not_to_stream(aml, clock):
    aml.add(FakeJob(JOB, [(0, "Running"), (30, "Completed")], log=[(1, "secret-ish output\n")]))

    with structlog.testing.capture_logs() as logs:
        events = await all_events(job_trigger(stream_logs=False))

    assert job_log_lines(logs) == []
    assert events[0].payload["log_offset"] == 0


@pytest.mark.parametrize(
    ("outage", "expected_lines"),
    [
        ((0, 30, 503), ["line 1", "line 2", "line 3"]),  # the store recovers: nothing is lost or repeated
        ((0, 10_000, 403), []),  # the log's SAS URL is refused for good: the wait goes on without it
    ],
    ids=["log-store-503", "log-store-403"],
)
async def test_a_log_that_cannot_be_read_does_not_end_the_wait(aml, clock, outage, expected_lines):
    job = aml.add(FakeJob(JOB, [(0, "Running"), (60, "Completed")],
                          log=[(1, "line 1\n"), (20, "line 2\n"), (40, "line 3\n")]))
    aml.log_outage = outage

    with structlog.testing.capture_logs() as logs:
        events = await all_events(job_trigger())

    assert [e.payload["status"] for e in events] == [EVENT_SUCCESS]
    assert job_log_lines(logs) == expected_lines
    assert job.status(clock.elapsed) == "Completed"


async def test_the_log_offset_survives_a_triggerer_crash(aml, clock, airflow_api):
    lines = [f"step {i}" for i in range(1, 9)]
    aml.add(FakeJob(JOB, [(0, "Running"), (100, "Completed")], log=[(i * 10, f"{s}\n") for i, s in enumerate(lines)]))
    # What the operator stores before deferring, and the kwargs the triggerer keeps for the trigger.
    await airflow_api.aset(LOG_OFFSET_XCOM_KEY, {"job_name": JOB, "offset": 0}, **vars(TI))
    kwargs = json.loads(json.dumps(job_trigger().serialize()[1]))

    first = AzureMLJobTrigger(**kwargs)
    first.task_instance = TI
    clock.park_after = 45
    with structlog.testing.capture_logs() as logs:
        task = await parked(clock, first)
        task.cancel()  # the triggerer dies: no user action, so no on_kill
        with pytest.raises(asyncio.CancelledError):
            await task
        shown_before_crash = job_log_lines(logs)
        # A new triggerer re-creates the trigger from the same kwargs (log_offset 0).
        clock.park_after = None
        second = AzureMLJobTrigger(**kwargs)
        second.task_instance = TI
        events = await all_events(second)

    assert 3 <= len(shown_before_crash) < len(lines)
    assert job_log_lines(logs) == lines  # every line once, in order, across both triggerers
    assert events[0].payload["status"] == EVENT_SUCCESS
    assert airflow_api.stored_offset(TI) == {"job_name": JOB, "offset": events[0].payload["log_offset"]}


async def test_a_stored_offset_of_another_attempt_is_ignored(aml, clock, airflow_api):
    aml.add(FakeJob(JOB, [(0, "Running"), (30, "Completed")], log=[(1, "a\n"), (2, "b\n")]))
    await airflow_api.aset(LOG_OFFSET_XCOM_KEY, {"job_name": JOB[:-1] + "x", "offset": 10_000}, **vars(TI))
    trigger = job_trigger()
    trigger.task_instance = TI

    with structlog.testing.capture_logs() as logs:
        await all_events(trigger)

    assert job_log_lines(logs) == ["a", "b"]


async def test_cancelling_run_reraises_and_leaves_the_job_running(aml, clock):
    """The triggerer cancels run() on shutdown or hand-over too; only on_kill may stop the job."""
    job = aml.add(running_job())
    clock.park_after = 20

    task = await parked(clock, job_trigger(deadline=T0 + 3600))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert job.status(clock.elapsed) == "Running"
    assert aml.open_sessions == 0  # the hook is closed on the way out


async def test_cancelling_during_error_backoff_reraises_instead_of_reporting_an_error(aml, clock):
    aml.add(running_job())
    aml.outage = (0, 10_000, "connection")
    clock.park_after = 0

    task = await parked(clock, job_trigger())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert aml.open_sessions == 0


@pytest.mark.parametrize("ti_state", ["failed", "success", None], ids=["marked-failed", "marked-success", "no-ti"])
async def test_a_user_kill_cancels_the_job(aml, clock, airflow_api, ti_state):
    job = aml.add(running_job())
    trigger = job_trigger()
    if ti_state is not None:
        trigger.task_instance = TI
        airflow_api.set_state(TI, ti_state)
    clock.park_after = 20

    await kill_like_the_triggerer(await parked(clock, trigger), trigger)

    assert job.status(clock.elapsed) == "Canceled"
    assert aml.open_sessions == 0


@pytest.mark.parametrize("ti_state", [None, "scheduled", "restarting", "deferred"])
async def test_a_cleared_or_reassigned_task_leaves_the_job_running(aml, clock, airflow_api, ti_state):
    """A cleared task re-attaches to the same job by name; a trigger handed to another triggerer goes on."""
    job = aml.add(running_job())
    trigger = job_trigger()
    trigger.task_instance = TI
    airflow_api.set_state(TI, ti_state)
    clock.park_after = 20

    await kill_like_the_triggerer(await parked(clock, trigger), trigger)

    assert job.status(clock.elapsed) == "Running"
    assert aml.open_sessions == 0


async def test_on_kill_cancels_when_the_task_state_cannot_be_read(aml, clock, airflow_api):
    job = aml.add(running_job())
    trigger = job_trigger()
    trigger.task_instance = TI
    airflow_api.set_state(TI, None)  # cleared, but nobody can tell
    airflow_api.reachable = False

    await trigger.on_kill()

    assert job.status(clock.elapsed) == "Canceled"


async def test_on_kill_cancels_when_the_task_instance_is_gone(aml, clock, airflow_api):
    """The DAG run was deleted: no task will re-attach, so the job must stop (unknown means cancel)."""
    job = aml.add(running_job())
    trigger = job_trigger()
    trigger.task_instance = TI  # and no state recorded for it in Airflow

    await trigger.on_kill()

    assert job.status(clock.elapsed) == "Canceled"


async def test_on_kill_waits_out_a_transient_error_before_canceling(aml, clock):
    job = aml.add(running_job())
    aml.outage = (0, 5, 503)

    await job_trigger().on_kill()

    assert job.status(clock.elapsed) == "Canceled"
    assert clock.elapsed >= 5 and aml.open_sessions == 0


async def test_on_kill_leaves_a_finished_job_alone(aml, clock):
    job = aml.add(FakeJob(JOB, [(0, "Running"), (10, "Completed")]))
    clock.now = T0 + 20

    await job_trigger().on_kill()

    assert job.status(clock.elapsed) == "Completed"
    assert aml.open_sessions == 0


async def test_first_event_stops_the_trigger_and_closes_its_hook(aml, clock):
    """The non-deferrable operator and the sensor's poke mode wait with first_event()."""
    aml.add(FakeJob(JOB, [(0, "Running"), (30, "Completed")]))

    event = await first_event(job_trigger())

    assert in_vocabulary(event.payload)["status"] == EVENT_SUCCESS
    assert aml.open_sessions == 0


# --- one client per connection, and what a quiet job costs AML ----------------------------------
def requests_between(aml: FakeAML, start: float, end: float) -> dict[str, int]:
    counts = {"status": 0, "run_details": 0, "log": 0}
    for t, kind in aml.requests:
        if start <= t < end:
            counts[kind] += 1
    return counts


async def test_the_triggers_of_one_connection_share_one_client_and_close_it_after_the_last(aml, clock):
    ends = [30 + 7 * i for i in range(40)]
    for i, end in enumerate(ends):
        aml.add(FakeJob(f"job-{i}", [(0, "Running"), (end, "Completed")], log=[(1, f"job {i} starts\n")]))

    events = await asyncio.gather(*(all_events(job_trigger(job_name=f"job-{i}")) for i in range(len(ends))))

    assert all(e[0].payload["status"] == EVENT_SUCCESS for e in events)
    assert aml.clients_built == 1  # forty waits, one MLClient (and one credential, one log transport)
    assert aml.open_sessions == 0 and len(aml_trigger.SHARED_HOOKS) == 0  # closed with the last wait


async def test_another_connection_or_an_edited_one_gets_its_own_client(aml, clock):
    for name in ("a", "b", "c"):
        aml.add(FakeJob(name, [(0, "Running"), (60, "Completed")]))
    other = Connection(conn_id="azureml_other", conn_type="azureml", extra=AML_CONN.extra)
    aml.connections.add(other)

    async def edit_the_connection_later() -> list[Any]:
        await _real_sleep(0.05)  # the first two triggers hold their hooks by now
        aml.connections.add(Connection(conn_id=AML_CONN.conn_id, conn_type="azureml",
                                       extra=AML_CONN.extra.replace('"rg"', '"rg2"')))
        return await all_events(job_trigger(job_name="c"))

    await asyncio.gather(
        all_events(job_trigger(job_name="a")),
        all_events(job_trigger(job_name="b", azureml_conn_id="azureml_other")),
        edit_the_connection_later(),
    )

    assert aml.clients_built == 3
    assert aml.open_sessions == 0 and len(aml_trigger.SHARED_HOOKS) == 0


def test_a_shared_hook_builds_its_client_once_however_many_threads_ask(aml):
    import threading
    import time as real_time

    hook = FakeAzureMLHook(service=aml, azureml_conn_id=AML_CONN.conn_id, connection=AML_CONN)
    build = hook._build_client

    def slow_build() -> Any:
        real_time.sleep(0.05)  # a real MLClient takes a while to build: every thread asks meanwhile
        return build()

    hook._build_client = slow_build
    barrier = threading.Barrier(8)
    clients: list[Any] = []

    def ask() -> None:
        barrier.wait()
        clients.append(hook.get_conn())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert aml.clients_built == 1 and len({id(c) for c in clients}) == 1
    hook.close()


async def test_a_quiet_job_costs_at_most_five_requests_a_minute(aml, clock):
    """At the cap: a status call every 15 s, and the log read only while it grows, else ever more rarely."""
    aml.add(FakeJob(JOB, [(0, "Queued"), (10, "Running"), (1810, "Completed")],
                    log=[(11, "training starts\n"), (12, "epoch 1\n"), (1805, "done\n")]))

    with structlog.testing.capture_logs() as logs:
        events = await all_events(job_trigger())

    assert events[0].payload["status"] == EVENT_SUCCESS
    assert job_log_lines(logs) == ["training starts", "epoch 1", "done"]
    # The log's URL came from run history once; every later read used it.
    assert requests_between(aml, 0, 10_000)["run_details"] == 1
    policy = PollPolicy()
    for minute in range(3, 30):  # quiet from minute 3 on (the ramp and the first lines are over)
        counts = requests_between(aml, minute * 60, (minute + 1) * 60)
        assert counts["status"] <= 60 / policy.max_s, (minute, counts)
        assert counts["log"] + counts["run_details"] <= 1, (minute, counts)
        assert sum(counts.values()) <= 5, (minute, counts)


async def test_a_log_that_grows_again_after_a_quiet_spell_is_shown_within_a_minute(aml, clock):
    aml.add(FakeJob(JOB, [(0, "Running"), (3000, "Completed")],
                    log=[(1, "start\n"), (1200, "late line\n")]))
    clock.park_after = 1200 + PollPolicy().log_quiet_max_s + PollPolicy().max_s

    with structlog.testing.capture_logs() as logs:
        task = await parked(clock, job_trigger())
        shown = job_log_lines(logs)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert shown == ["start", "late line"]
    assert aml.open_sessions == 0


async def test_an_expired_log_url_is_asked_for_again(aml, clock):
    """A SAS URL that stops working (403) is dropped; run history hands out a fresh one at the next read."""
    aml.add(FakeJob(JOB, [(0, "Running"), (600, "Completed")],
                    log=[(1, "a\n"), (100, "b\n"), (500, "c\n")]))
    aml.log_outage = (60, 300, 403)

    with structlog.testing.capture_logs() as logs:
        events = await all_events(job_trigger())

    assert events[0].payload["status"] == EVENT_SUCCESS
    assert job_log_lines(logs) == ["a", "b", "c"]
    assert requests_between(aml, 0, 10_000)["run_details"] >= 2


# === StackHubPartitionTrigger =====================================================================
class FakeStorageAccount:
    """A Stack Hub storage account whose blobs appear at given times, and which can be down or refuse."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.blobs: dict[tuple[str, str], float] = {}
        self.outage: tuple[float, float, Any] | None = None
        #: The Retry-After (seconds) the outage's HTTP errors carry, as a throttling account sends.
        self.retry_after: int | None = None
        self.refusal: int | None = None
        self.requests_served = 0
        self.failed_requests = 0
        self.open_clients = 0

    def write(self, container: str, name: str, at: float = 0.0) -> None:
        self.blobs[(container, name)] = at

    def serve(self) -> float:
        t = self.clock.elapsed
        self.requests_served += 1
        if self.outage is not None and self.outage[0] <= t < self.outage[1]:
            self.failed_requests += 1
            kind = self.outage[2]
            if kind == "timeout":
                raise TimeoutError()
            if self.retry_after is not None:
                raise http_error(int(kind), headers={"Retry-After": str(self.retry_after)})
            raise outage_error(kind)
        if self.refusal is not None:
            self.failed_requests += 1
            raise http_error(self.refusal, code="AuthenticationFailed")
        return t

    def visible(self, container: str, t: float) -> list[str]:
        return sorted(name for (c, name), at in self.blobs.items() if c == container and at <= t)


class FakeBlobServiceClient:
    """``azure.storage.blob.aio.BlobServiceClient`` on a FakeStorageAccount (bound by the fixture).

    Like the real one, it opens its HTTP session on ``__aenter__`` or on its first request, and
    only ``__aexit__``/``close()`` closes it.
    """

    account: FakeStorageAccount

    def __init__(self, url: str) -> None:
        self.url = url
        self.session_open = False

    @classmethod
    def from_connection_string(cls, conn_str: str, **kwargs: Any) -> FakeBlobServiceClient:
        parts = dict(p.split("=", 1) for p in conn_str.split(";") if p)
        return cls(f"{parts.get('DefaultEndpointsProtocol', 'https')}://{parts['AccountName']}.blob."
                   f"{parts['EndpointSuffix']}/")

    def _open(self) -> None:
        if not self.session_open:
            self.session_open = True
            self.account.open_clients += 1

    async def close(self) -> None:
        if self.session_open:
            self.session_open = False
            self.account.open_clients -= 1

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def get_container_client(self, container: str) -> Any:
        account = self.account

        def request() -> float:
            self._open()
            return account.serve()

        def get_blob_client(name: str) -> Any:
            async def get_blob_properties() -> Any:
                t = request()
                if name not in account.visible(container, t):
                    raise http_error(404, code="BlobNotFound")
                return types.SimpleNamespace(name=name, size=10)

            return types.SimpleNamespace(get_blob_properties=get_blob_properties)

        async def list_blobs(name_starts_with: str = "", results_per_page: int | None = None):
            t = request()
            for name in account.visible(container, t):
                if name.startswith(name_starts_with):
                    yield types.SimpleNamespace(name=name)

        return types.SimpleNamespace(get_blob_client=get_blob_client, list_blobs=list_blobs)


@pytest.fixture
def storage(monkeypatch, clock) -> FakeStorageAccount:
    import azure.storage.blob.aio

    account = FakeStorageAccount(clock)
    bound = type("BoundFakeBlobServiceClient", (FakeBlobServiceClient,), {"account": account})
    monkeypatch.setattr(azure.storage.blob.aio, "BlobServiceClient", bound)
    connections = FakeConnections(BLOB_CONN, PUBLIC_BLOB_CONN)
    monkeypatch.setattr(StackHubBlobHook, "aget_connection", connections.aget_connection)
    return account


PREFIX = "telemetry/date=2026-11-10/"


SPEC_FIELDS = {"container", "prefix", "success_marker", "data_pattern"}


def partition_trigger(**kwargs: Any) -> StackHubPartitionTrigger:
    """The trigger as the operator defers to it; ``kwargs`` may name PartitionSpec fields too."""
    spec = {"container": "training", "prefix": PREFIX, "success_marker": "_SUCCESS", "data_pattern": "part-*.csv"}
    spec.update({k: kwargs.pop(k) for k in SPEC_FIELDS & set(kwargs)})
    args: dict[str, Any] = {
        "stackhub_conn_id": "stackhub_blob", "partition": PartitionSpec(**spec), "deadline": T0 + 3600,
        "poll_interval": 30.0, "max_poll_interval": 300.0,
    }
    args.update(kwargs)
    return StackHubPartitionTrigger(**args)


class ClientState:
    """Reads whether the storage client is still open at the moment the event is delivered."""

    def __init__(self, account: FakeStorageAccount) -> None:
        self.account = account

    async def events(self, trigger) -> list[tuple[dict, int]]:
        return [(in_vocabulary(event.payload), self.account.open_clients) async for event in trigger.run()]


async def test_a_late_marker_is_seen_and_the_client_is_closed_before_the_event(storage, clock):
    storage.write("training", PREFIX + "part-00000.csv", at=0)
    storage.write("training", PREFIX + "_SUCCESS", at=200)

    delivered = await ClientState(storage).events(partition_trigger())

    assert delivered == [({"status": EVENT_SUCCESS, "message": f"partition training/{PREFIX} is written",
                           "prefix": PREFIX, "container": "training"}, 0)]
    assert 200 <= clock.elapsed < 200 + 300
    for attempt, delay in enumerate(clock.delays):  # 30 s doubling, capped at 300 s, up to 20 % taken off
        assert 0.8 * min(300, 30 * 2**attempt) <= delay <= min(300, 30 * 2**attempt)


async def test_without_a_marker_only_a_matching_data_file_counts(storage, clock):
    storage.write("training", PREFIX + "_temporary/part-00000.csv", at=0)
    storage.write("training", PREFIX + "part-00000.csv.tmp", at=0)
    storage.write("training", "telemetry/date=2026-11-09/part-00000.csv", at=0)
    storage.write("training", PREFIX + "part-00000.csv", at=100)

    events = await ClientState(storage).events(partition_trigger(success_marker=None))

    assert [p["status"] for p, _ in events] == [EVENT_SUCCESS]
    assert clock.elapsed >= 100


async def test_a_partition_that_never_comes_times_out_at_the_deadline(storage, clock):
    storage.write("training", PREFIX + "part-00000.csv", at=0)  # data without its marker is not ready

    events = await ClientState(storage).events(partition_trigger(deadline=T0 + 1000))

    (payload, open_clients), = events
    assert payload["status"] == EVENT_TIMEOUT and open_clients == 0
    assert f"training/{PREFIX} was not ready by the deadline" in payload["message"]
    assert "_SUCCESS marker" in payload["message"] and "last error" not in payload["message"]
    assert clock.elapsed == pytest.approx(1000)  # the last wait is cut at the deadline


@pytest.mark.parametrize("kind", [503, 500, 429, "connection", "reset", "timeout"])
async def test_transient_storage_errors_are_retried(storage, clock, kind):
    storage.write("training", PREFIX + "_SUCCESS", at=0)
    storage.outage = (0, 100, kind)

    events = await ClientState(storage).events(partition_trigger())

    assert [p["status"] for p, _ in events] == [EVENT_SUCCESS]
    assert storage.failed_requests >= 2 and clock.elapsed >= 100


@pytest.mark.parametrize("status", [429, 503])
async def test_a_throttling_account_is_left_alone_for_its_retry_after(storage, clock, status):
    storage.write("training", PREFIX + "_SUCCESS", at=0)
    storage.outage = (0, 1, status)
    storage.retry_after = 200

    events = await ClientState(storage).events(partition_trigger())

    assert [p["status"] for p, _ in events] == [EVENT_SUCCESS]
    assert clock.delays == [200]  # not the 24-30 s a first pause would be
    assert storage.failed_requests == 1


async def test_a_timeout_during_an_outage_names_the_last_error(storage, clock):
    storage.write("training", PREFIX + "_SUCCESS", at=0)
    storage.outage = (0, 10_000, 503)

    events = await ClientState(storage).events(partition_trigger(deadline=T0 + 600))

    payload = events[0][0]
    assert payload["status"] == EVENT_TIMEOUT and "last error: HTTP 503" in payload["message"]
    assert clock.elapsed == pytest.approx(600)


@pytest.mark.parametrize("status", [403, 400])
async def test_a_non_transient_storage_error_ends_the_wait_at_once(storage, clock, status):
    storage.refusal = status

    events = await ClientState(storage).events(partition_trigger())

    (payload, open_clients), = events
    assert payload["status"] == EVENT_ERROR and payload["message"].startswith(f"HTTP {status} polling training/")
    assert clock.delays == [] and open_clients == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"container": "Training_Data"}, "container name 'Training_Data' is invalid"),
        ({"prefix": "../etc/"}, "InvalidPartitionKeyError"),
        ({"stackhub_conn_id": "public_blob"}, "LocalityPolicyError"),
        ({"stackhub_conn_id": "missing"}, "isn't defined"),
    ],
)
async def test_configuration_errors_are_reported_without_a_request(storage, clock, kwargs, message):
    events = await ClientState(storage).events(partition_trigger(**kwargs))

    assert len(events) == 1
    assert events[0][0]["status"] == EVENT_ERROR and message in events[0][0]["message"]
    assert storage.requests_served == 0 and clock.delays == []


async def test_cancelling_the_partition_wait_reraises_and_closes_the_client(storage, clock):
    clock.park_after = 0

    task = await parked(clock, partition_trigger())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert storage.open_clients == 0


async def test_partition_trigger_round_trip_keeps_its_absolute_deadline(storage, clock):
    trigger = partition_trigger(success_marker=None, data_pattern="*.parquet", deadline=T0 + 900,
                                poll_interval=5, max_poll_interval=60, stack_hub_domain=DOMAIN,
                                allow_public_endpoint=False)
    classpath, kwargs = trigger.serialize()
    kwargs = json.loads(json.dumps(kwargs))  # what the triggerer stores
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert isinstance(rebuilt, StackHubPartitionTrigger)
    assert rebuilt.serialize() == (classpath, kwargs)

    # A triggerer that picks the trigger up 800 s later has only the remaining 100 s to wait.
    clock.now = T0 + 800
    events = await ClientState(storage).events(rebuilt)
    assert events[0][0]["status"] == EVENT_TIMEOUT
    assert clock.elapsed == pytest.approx(900)
    assert "matching '*.parquet'" in events[0][0]["message"]
