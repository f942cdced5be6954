"""Execute paths of the AML operators against a fake AML workspace that behaves, in memory.

No stack, no network, no connection. ``FakeAzureMLHook`` answers the hook methods that the submit,
register and gate operators (and the trigger they defer to) call, with the real hook's signatures and
return shapes, from a ``FakeWorkspace``: jobs (status, tags, outputs, run history, log, output files)
and a model registry. A job moves one step along its scripted statuses each time it is read, as a real
job moves on while it is polled. The fake replaces ``AzureMLHook`` where the operators reach it (the
module-level name in operators/azureml.py and operators/gate.py) and the trigger's ``_hook``.

Gate policy maths, templating and serialisation are covered in test_azureml_operators.py.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import DownstreamTasksSkipped, TaskDeferralTimeout, TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors
from edge_training.exceptions import (
    AzureMLError,
    AzureMLJobExistsError,
    AzureMLJobFailedError,
    AzureMLJobTimeoutError,
    EvaluationGateError,
    ModelOutputError,
    ModelRegistrationError,
)
from edge_training.hooks.azureml import (
    DEFAULT_CONN_ID,
    TERMINAL_STATUSES,
    AzureMLHook,
    CommandJobSpec,
    JobRunInfo,
    JobState,
    LogChunk,
    job_output_uri,
    split_complete_lines,
)
from edge_training.hooks.azureml_naming import attempt_name, build_job_name
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.operators import azureml as azureml_operators
from edge_training.operators import gate as gate_operators
from edge_training.assets import model_asset
from edge_training.operators.azureml import (
    DEFERRAL_GRACE_S,
    AzureMLRegisterModelOperator,
    AzureMLSubmitJobOperator,
)
from edge_training.operators.gate import EvaluateGateOperator
from edge_training.sensors import azureml as azureml_sensors
from edge_training.sensors.azureml import AzureMLJobSensor
from edge_training.triggers.azureml import LOG_OFFSET_XCOM_KEY, AzureMLJobTrigger, first_event
from edge_training.triggers.events import EVENT_ERROR, EVENT_FAILED, EVENT_SUCCESS, EVENT_TIMEOUT

WORKSPACE = "edge-ws"
RESOURCE_GROUP = "edge-rg"
WSID = (f"/subscriptions/sub-1/resourceGroups/{RESOURCE_GROUP}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}")
WORKSPACE_URI = f"azureml://subscriptions/sub-1/resourcegroups/{RESOURCE_GROUP}/workspaces/{WORKSPACE}"
LOG_FILE = "user_logs/std_log.txt"

DAG_ID = "edge_training"
PARTITION = "2026-11-10"
FINGERPRINT = "sha256-9f2c4e1ab37d0c55e2"
RUN_ID = "scheduled__2026-11-10T00:00:00+00:00"
RERUN_ID = "manual__2026-11-12T08:30:00+00:00"
COMMAND = "python3 train.py --data ${{inputs.data}} --output ${{outputs.model}} --label failure"
DATA_URI = "azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-10/"
MODEL = "equipment-failure"
JOB_ERROR = "UserError: train.py exited with code 1: KeyError: column 'failure' not in the partition"
#: A status poll every millisecond: the trigger runs to its event at once.
FAST_POLLS = PollPolicy(initial_s=0.001, factor=1.0, max_s=0.001, jitter=0.0, error_initial_s=0.001, error_max_s=0.001)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def metrics_file(**metrics: Any) -> dict[str, dict[str, str]]:
    """A job's ``model`` output holding ``metrics.json`` (and the model file beside it)."""
    return {"model": {"metrics.json": json.dumps(metrics), "model.pkl": "<pickle>"}}


# --- the fake AML workspace ----------------------------------------------------------------------
@dataclass
class JobScript:
    """What a job does once it exists: statuses it moves through (one per read) and what it leaves."""

    plan: tuple[str, ...] = ("Queued", "Running", "Completed")
    error: str | None = None
    files: dict[str, dict[str, str]] = field(default_factory=lambda: metrics_file(roc_auc=0.91))
    log_lines: tuple[str, ...] = ("loading partition 2026-11-10", "epoch 1/1 loss=0.3100", "saved model")
    runtime_s: float = 754.5


@dataclass
class FakeJob:
    name: str
    spec: dict[str, Any]
    tags: dict[str, str]
    outputs: dict[str, str]
    script: JobScript
    created_at: datetime
    status: str = "NotStarted"
    plan: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    reads: int = 0


@dataclass
class FakeModelVersion:
    """The fields of an azure.ai.ml ``Model`` version the operators read."""

    name: str
    version: str
    path: str
    tags: dict[str, str]
    description: str | None = None
    stage: str | None = None
    type: str = "custom_model"
    properties: dict[str, str] = field(default_factory=dict)


#: Fields AML refuses to change on an existing job (a job name identifies one run).
IMMUTABLE_JOB_FIELDS = ("command", "environment", "compute", "code", "inputs", "outputs", "environment_variables",
                        "instance_type")


class FakeWorkspace:
    """One AML workspace's state: computes, jobs, a model registry. Shared by every hook opened on it."""

    def __init__(self) -> None:
        self.computes = {"edge-vm": "virtualmachine", "arc-k8s": "kubernetes"}
        self.jobs: dict[str, FakeJob] = {}
        self.models: dict[str, list[FakeModelVersion]] = {}
        self.scripts: dict[str, JobScript] = {}
        self.submit_calls: list[str] = []
        self.cancel_requests: list[str] = []
        self.log_reads: list[tuple[str, int, bool]] = []
        #: (job name, n): called right after the n-th read of that job (something happening meanwhile).
        self.on_read: dict[tuple[str, int], Callable[[], None]] = {}
        self.hooks: list[FakeAzureMLHook] = []

    # -- arranging the world ----------------------------------------------------------------------
    def script(self, name: str, **kwargs: Any) -> None:
        """How the job of that name will behave once submitted."""
        self.scripts[name] = JobScript(**kwargs)

    def add_job(
        self, name: str, *, status: str, tags: Mapping[str, str] | None = None, created_at: datetime | None = None,
        script: JobScript | None = None,
    ) -> FakeJob:
        """A job an earlier run submitted, already ``status`` (it then stays there unless canceled)."""
        job = FakeJob(
            name=name, spec={"command": COMMAND, "environment": "edge-training-env:3", "compute": "edge-vm"},
            tags=dict(tags or {}), outputs={"model": job_output_uri(name, "model")},
            script=script or JobScript(plan=()), created_at=created_at or utcnow() - timedelta(hours=1),
        )
        self.jobs[name] = job
        if status in {"Running", "Finalizing"} or status in TERMINAL_STATUSES:
            self._move(job, "Running")
        if status != "Running":
            self._move(job, status)
        return job

    def add_model(self, name: str, *, tags: Mapping[str, Any], stage: str | None = None) -> FakeModelVersion:
        version = self._next_version(name)
        model = FakeModelVersion(name=name, version=version, path=f"azureml://jobs/old-{version}/outputs/model",
                                 tags={str(k): str(v) for k, v in tags.items()}, stage=stage)
        self.models.setdefault(name, []).append(model)
        return model

    # -- service behaviour ------------------------------------------------------------------------
    def studio_url(self, name: str) -> str:
        return f"https://ml.azure.com/runs/{name}?wsid={WSID}"

    def _next_version(self, name: str) -> str:
        return str(max((int(m.version) for m in self.models.get(name, [])), default=0) + 1)

    def _move(self, job: FakeJob, status: str) -> None:
        job.status = status
        job.history.append(status)
        if status in {"Running", "Finalizing"} or status in TERMINAL_STATUSES:
            job.started_at = job.started_at or utcnow()
        if status in TERMINAL_STATUSES:
            job.plan.clear()
            job.ended_at = job.started_at + timedelta(seconds=job.script.runtime_s)
            if status == "Completed":
                job.files = copy.deepcopy(job.script.files)
            elif status == "Failed":
                job.error = job.script.error

    def read(self, name: str) -> FakeJob | None:
        """A GET of the job: it moves one step along its plan, as a real job moves between two polls."""
        job = self.jobs.get(name)
        if job is None:
            return None
        if job.plan:
            self._move(job, job.plan.pop(0))
        job.reads += 1
        meanwhile = self.on_read.pop((name, job.reads), None)
        if meanwhile is not None:
            meanwhile()
        return job

    def state(self, job: FakeJob) -> JobState:
        return JobState(
            name=job.name, status=job.status, studio_url=self.studio_url(job.name),
            experiment_name=job.spec.get("experiment_name"), tags=dict(job.tags), outputs=dict(job.outputs),
            created_at=job.created_at.isoformat(),
        )

    def log_bytes(self, job: FakeJob) -> bytes:
        """Nothing before the job starts; every line but a partial last one while it runs; all once ended."""
        if job.started_at is None:
            return b""
        text = "\n".join(job.script.log_lines) + "\n"
        if job.status not in TERMINAL_STATUSES:
            text = text[:-1]
        return text.encode()

    def not_found(self, name: str) -> AzureMLError:
        return AzureMLError(
            f"AML job {name!r} not found in workspace {WORKSPACE!r} (resource group {RESOURCE_GROUP!r})"
        )


class FakeAzureMLHook:
    """The hook the operators and the trigger call, answering from ``workspace`` (set per test)."""

    workspace: FakeWorkspace

    def __init__(
        self,
        *,
        azureml_conn_id: str = DEFAULT_CONN_ID,
        retry_total: int | None = None,
        connection: Any = None,
    ) -> None:
        self.azureml_conn_id = azureml_conn_id
        self.retry_total = retry_total
        self.closed = False
        self.workspace.hooks.append(self)

    def __enter__(self) -> FakeAzureMLHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    # -- jobs -------------------------------------------------------------------------------------
    def get_compute_kind(self, compute: str) -> str:
        kind = self.workspace.computes.get(compute)
        if kind is None:
            raise AzureMLError(f"AML compute {compute!r} not found in workspace {WORKSPACE!r}")
        return kind

    def find_job(self, name: str) -> JobState | None:
        job = self.workspace.read(name)
        return None if job is None else self.workspace.state(job)

    def get_job(self, name: str) -> JobState:
        job = self.find_job(name)
        if job is None:
            raise self.workspace.not_found(name)
        return job

    def submit_command_job(self, name: str, spec: CommandJobSpec) -> JobState:
        ws = self.workspace
        ws.submit_calls.append(name)
        if spec.code is not None and not Path(spec.code).is_dir():
            raise AzureMLError(f"AML job {name!r}: code directory {spec.code!r} does not exist or is not a directory")
        # What AML keeps of the job: plain strings, the display name defaulted to the job's name.
        recorded = {
            "command": spec.command, "environment": spec.environment, "compute": spec.compute, "code": spec.code,
            "inputs": copy.deepcopy(dict(spec.inputs)), "outputs": copy.deepcopy(dict(spec.outputs)),
            "environment_variables": {str(k): str(v) for k, v in spec.environment_variables.items()},
            "instance_type": spec.instance_type, "experiment_name": spec.experiment_name,
            "display_name": spec.display_name or name, "description": spec.description,
        }
        str_tags = {str(k): str(v) for k, v in spec.tags.items()}
        existing = ws.jobs.get(name)
        if existing is not None:
            # AML's contract: the same spec under the same name answers with the existing job (display
            # fields may change); another spec is refused. A name never gives two jobs.
            differs = [k for k in IMMUTABLE_JOB_FIELDS if existing.spec.get(k) != recorded[k]]
            if differs:  # the real hook names AML's 409 so
                raise AzureMLJobExistsError(
                    f"AML job {name!r} already exists in workspace {WORKSPACE!r} with another spec (HTTP 409): "
                    f"differs in {differs}"
                )
            existing.spec.update(display_name=recorded["display_name"], description=spec.description)
            existing.tags = str_tags or existing.tags
            return ws.state(existing)
        declared = {k: v for k, v in spec.outputs.items() if k != "default"}
        job = FakeJob(
            name=name, spec=recorded, tags=str_tags,
            outputs={k: str((v or {}).get("path") or job_output_uri(name, k)) for k, v in declared.items()},
            script=ws.scripts.get(name, JobScript()), created_at=utcnow(),
        )
        job.plan = list(job.script.plan)
        job.history.append(job.status)
        ws.jobs[name] = job
        return ws.state(job)

    def cancel_job(self, name: str, *, wait_s: float = 60.0) -> JobState:
        ws = self.workspace
        job = ws.jobs.get(name)
        if job is None:
            raise ws.not_found(name)
        if job.status not in TERMINAL_STATUSES:
            ws.cancel_requests.append(name)
            ws._move(job, "Canceled")
        return ws.state(job)

    def get_run_info(self, name: str) -> JobRunInfo:
        job = self.workspace.jobs.get(name)
        if job is None:
            raise self.workspace.not_found(name)
        return JobRunInfo(
            error=job.error,
            started_at=job.started_at.isoformat() if job.started_at else None,
            ended_at=job.ended_at.isoformat() if job.ended_at else None,
        )

    def read_log(self, name: str, offset: int = 0, *, final: bool = False) -> LogChunk:
        log_file, url = self.log_url(name)
        if url is None:
            return LogChunk([], offset, None)
        return self.read_log_at(name, url, offset, final=final, log_file=log_file)

    def log_url(self, name: str) -> tuple[str | None, str | None]:
        job = self.workspace.jobs.get(name)
        if job is None:
            raise self.workspace.not_found(name)
        if job.started_at is None:
            return None, None
        return LOG_FILE, f"https://store.example/{name}/{LOG_FILE}"

    def read_log_at(
        self, name: str, url: str, offset: int = 0, *, final: bool = False, log_file: str | None = None
    ) -> LogChunk:
        ws = self.workspace
        ws.log_reads.append((name, offset, final))
        data = ws.log_bytes(ws.jobs[name])
        lines, used = split_complete_lines(data[offset:], final=final)
        return LogChunk(lines, offset + used, log_file, new_bytes=len(data[offset:]))

    def list_outputs(self, name: str) -> dict[str, str]:
        return dict(self.get_job(name).outputs)

    def read_job_metrics(self, name: str, *, output_name: str = "model", file_name: str = "metrics.json") -> dict:
        """Like the real hook: download the Completed job's output, find the file, parse a JSON object."""
        state = self.get_job(name)
        what = f"AML job {name!r}"
        if not state.succeeded:
            raise AzureMLError(f"{what}: expected status Completed to read its outputs, found {state.status}")
        if output_name not in state.outputs:
            raise AzureMLError(f"{what}: expected an output named {output_name!r}, found {sorted(state.outputs)}")
        files = self.workspace.jobs[name].files.get(output_name, {})
        if not files:
            raise AzureMLError(f"{what}: expected output {output_name!r} downloaded, found nothing there")
        matches = sorted(path for path in files if path.rsplit("/", 1)[-1] == file_name)
        if not matches:
            raise ModelOutputError(f"{what}: expected {file_name} in output {output_name!r}, found {sorted(files)}")
        try:
            metrics = json.loads(files[matches[0]])
        except json.JSONDecodeError as err:
            raise ModelOutputError(f"{what}: {file_name} is not valid JSON ({err})") from err
        if not isinstance(metrics, dict):
            raise ModelOutputError(f"{what}: {file_name} must hold a JSON object, found {type(metrics).__name__}")
        return metrics

    # -- models -----------------------------------------------------------------------------------
    def list_model_versions(self, name: str) -> list[Any]:
        return sorted(self.workspace.models.get(name, []), key=lambda m: int(m.version), reverse=True)

    def find_model_by_tag(self, name: str, key: str, value: str) -> Any | None:
        return next((m for m in self.list_model_versions(name) if str(m.tags.get(key)) == str(value)), None)

    def register_model(
        self,
        *,
        name: str,
        path: str,
        tags: Mapping[str, Any],
        description: str | None = None,
        properties: Mapping[str, Any] | None = None,
        model_type: str = "custom_model",
    ) -> Any:
        ws = self.workspace
        model = FakeModelVersion(
            name=name, version=ws._next_version(name), path=path, tags={str(k): str(v) for k, v in tags.items()},
            description=description, type=model_type,
            properties={str(k): str(v) for k, v in (properties or {}).items()},
        )
        ws.models.setdefault(name, []).append(model)
        return model

    def model_studio_url(self, name: str, version: str) -> str:
        return f"https://ml.azure.com/model/{name}:{version}/details?wsid={WSID}"

    def workspace_uri(self) -> str:
        return WORKSPACE_URI


FAKED_METHODS = (
    "__init__", "close", "get_compute_kind", "find_job", "get_job", "submit_command_job", "cancel_job",
    "get_run_info", "read_log", "log_url", "read_log_at", "list_outputs", "read_job_metrics", "list_model_versions",
    "find_model_by_tag", "register_model", "model_studio_url", "workspace_uri",
)


@pytest.fixture
def workspace(monkeypatch):
    """A fresh workspace behind every AzureMLHook the operators and the trigger open; all must be closed."""
    ws = FakeWorkspace()
    monkeypatch.setattr(FakeAzureMLHook, "workspace", ws, raising=False)
    monkeypatch.setattr(azureml_operators, "AzureMLHook", FakeAzureMLHook)
    monkeypatch.setattr(gate_operators, "AzureMLHook", FakeAzureMLHook)

    async def no_connection_lookup(trigger: AzureMLJobTrigger) -> None:
        return None

    def trigger_hook(trigger: AzureMLJobTrigger, connection: Any) -> FakeAzureMLHook:
        return FakeAzureMLHook(azureml_conn_id=trigger.azureml_conn_id, retry_total=0)

    monkeypatch.setattr(AzureMLJobTrigger, "_connection", no_connection_lookup)
    monkeypatch.setattr(AzureMLJobTrigger, "_new_hook", trigger_hook)
    yield ws
    left_open = [h.azureml_conn_id for h in ws.hooks if not h.closed]
    assert not left_open, f"{len(left_open)} hook(s) left open (HTTP sessions would leak)"


# --- a minimal Airflow runtime -------------------------------------------------------------------
class FakeTI:
    """What the operators use of a RuntimeTaskInstance: XCom (a dict), start date, map index."""

    def __init__(self, *, dag_id: str, task_id: str, run_id: str, start_date: datetime) -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, run_id
        self.start_date = start_date
        self.map_index = -1
        self.try_number = 1
        self.stats_tags: dict[str, str] = {}
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)


class FakeTaskStateStore:
    """``context['task_state_store']``: per task instance, shared by its tries."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values = dict(values or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = value


def new_dag() -> DAG:
    return DAG(dag_id=DAG_ID, schedule=None, start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
               render_template_as_native_obj=True)


def make_context(
    op: Any, *, run_id: str = RUN_ID, partition: str | None = PARTITION, store: FakeTaskStateStore | None = None,
    start_date: datetime | None = None,
) -> dict[str, Any]:
    """The context the task runner hands ``op``; like the runner, render its template fields with it first."""
    ti = FakeTI(dag_id=op.dag_id, task_id=op.task_id, run_id=run_id, start_date=start_date or utcnow())
    context = {
        "dag": op.dag,
        "dag_run": SimpleNamespace(dag_id=op.dag_id, run_id=run_id, partition_key=partition),
        "run_id": run_id,
        "ti": ti,
        "task_instance": ti,
        "params": {},
        "task_state_store": store if store is not None else FakeTaskStateStore(),
        "outlet_events": OutletEventAccessors(),
    }
    op.render_template_fields(context)
    return context


def submit_operator(**overrides: Any) -> AzureMLSubmitJobOperator:
    """submit_training as the DAG declares it, rendered (a fresh DAG each time, as a new worker parses it)."""
    kwargs: dict[str, Any] = dict(
        task_id="submit_training", command=COMMAND, environment="edge-training-env:3", compute="edge-vm",
        compute_kind="VirtualMachine", experiment_name="edge-training", partition=PARTITION,
        data_fingerprint=FINGERPRINT, inputs={"data": {"type": "uri_folder", "path": DATA_URI}},
        outputs={"model": {"type": "uri_folder"}}, tags={"git_commit": "4f1c2e9"}, poll_policy=FAST_POLLS,
        deferrable=True, dag=new_dag(),
    )
    kwargs.update(overrides)
    return AzureMLSubmitJobOperator(**kwargs)


def expect_deferral(op: AzureMLSubmitJobOperator, context: dict[str, Any]) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return info.value


def run_trigger(trigger: AzureMLJobTrigger) -> dict[str, Any]:
    """What the triggerer does: rebuild the trigger from its serialised form and run it to its first event."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    return asyncio.run(first_event(rebuilt)).payload


def resume(deferred: TaskDeferred, context: dict[str, Any], event: dict[str, Any], **overrides: Any) -> Any:
    """What the task runner does with the event: a fresh operator resumes into the method the deferral named."""
    op = submit_operator(**overrides)
    op.render_template_fields(context)
    return op.resume_execution(deferred.method_name, {**(deferred.kwargs or {}), "event": event}, context)


def job_name(partition: str = PARTITION, fingerprint: str = FINGERPRINT) -> str:
    return build_job_name(DAG_ID, partition, fingerprint)


def test_the_fake_hook_has_the_real_hooks_signatures():
    def shape(fn: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    for method in FAKED_METHODS:
        assert shape(getattr(FakeAzureMLHook, method)) == shape(getattr(AzureMLHook, method)), method


# --- AzureMLSubmitJobOperator: deferrable ----------------------------------------------------------
def test_a_new_partition_submits_one_job_defers_on_it_and_resumes_into_the_result(workspace):
    started = utcnow()
    limits = {"execution_timeout": timedelta(hours=3), "job_timeout": 14400}  # the task's limit comes first
    op = submit_operator(**limits)
    ctx = make_context(op, start_date=started)
    deferred = expect_deferral(op, ctx)

    name = job_name()
    assert workspace.submit_calls == [name] and list(workspace.jobs) == [name]
    job = workspace.jobs[name]
    assert job.tags == {"dag_id": DAG_ID, "task_id": "submit_training", "run_id": RUN_ID, "partition": PARTITION,
                        "data_fingerprint": FINGERPRINT, "git_commit": "4f1c2e9"}
    assert (job.spec["command"], job.spec["compute"], job.spec["display_name"]) == (COMMAND, "edge-vm", name)
    assert job.spec["inputs"] == {"data": {"type": "uri_folder", "path": DATA_URI}}
    assert job.outputs == {"model": job_output_uri(name, "model")}

    trigger = deferred.trigger
    assert type(trigger) is AzureMLJobTrigger and deferred.method_name == "execute_complete"
    assert (trigger.job_name, trigger.azureml_conn_id, trigger.deadline_reason) == (
        name, "azureml_default", "execution_timeout")
    assert trigger.deadline == pytest.approx(started.timestamp() + 3 * 3600)
    assert PollPolicy(**trigger.poll_policy) == FAST_POLLS
    # Airflow's own deferral timeout only backs the trigger's deadline up.
    assert deferred.timeout.total_seconds() == pytest.approx(3 * 3600 + DEFERRAL_GRACE_S, abs=30)
    # What a retry, the job link and the trigger's log position rely on.
    assert ctx["task_state_store"].get("azureml_job_name") == name
    assert ctx["ti"].xcoms["azureml_job_url"] == workspace.studio_url(name)
    assert ctx["ti"].xcoms[LOG_OFFSET_XCOM_KEY] == {"job_name": name, "offset": 0}

    event = run_trigger(trigger)
    assert (event["status"], event["job_status"], event["job_name"]) == (EVENT_SUCCESS, "Completed", name)
    assert event["log_offset"] == len(workspace.log_bytes(job))  # the whole log went to the task log
    result = resume(deferred, ctx, event, **limits)
    assert result == {
        "job_name": name,
        "status": "Completed",
        "studio_url": workspace.studio_url(name),
        "outputs": {"model": job_output_uri(name, "model")},
        "duration_s": 754.5,
    }
    assert workspace.submit_calls == [name] and list(workspace.jobs) == [name]


def test_a_rerun_of_the_partition_attaches_to_its_running_job_instead_of_submitting(workspace):
    name = job_name()
    workspace.add_job(name, status="Running", tags={"run_id": RUN_ID})
    # A manual re-run: another run id, no task state, the partition only in the run's key.
    op = submit_operator(partition=None)
    ctx = make_context(op, run_id=RERUN_ID, partition=PARTITION)
    deferred = expect_deferral(op, ctx)

    assert deferred.trigger.job_name == name
    assert workspace.submit_calls == [] and list(workspace.jobs) == [name]
    assert ctx["task_state_store"].get("azureml_job_name") == name
    assert workspace.jobs[name].tags == {"run_id": RUN_ID}  # the job still belongs to the run that made it


def test_a_rerun_of_the_partition_reuses_its_completed_job_without_deferring(workspace):
    name = job_name()
    workspace.add_job(name, status="Completed")
    op = submit_operator()
    ctx = make_context(op, run_id=RERUN_ID)

    result = op.execute(ctx)  # no TaskDeferred: nothing to wait for

    assert result["job_name"] == name and result["status"] == "Completed"
    assert result["outputs"] == {"model": job_output_uri(name, "model")} and result["duration_s"] == 754.5
    assert workspace.submit_calls == [] and list(workspace.jobs) == [name]
    assert (name, 0, True) in workspace.log_reads  # the reused job's log is shown in this task's log


@pytest.mark.parametrize("status", ["Running", "Completed"])
def test_a_retry_reconnects_to_the_job_its_earlier_try_stored(workspace, status):
    base = job_name()
    workspace.add_job(base, status="Failed")
    followed = workspace.add_job(attempt_name(base, 2), status=status).name
    op = submit_operator()
    ctx = make_context(op, store=FakeTaskStateStore({"azureml_job_name": followed}))

    if status == "Running":
        assert expect_deferral(op, ctx).trigger.job_name == followed
    else:
        assert op.execute(ctx)["job_name"] == followed
    assert workspace.submit_calls == [] and sorted(workspace.jobs) == [base, followed]


def test_new_data_for_the_partition_is_a_new_job(workspace):
    workspace.add_job(job_name(fingerprint="sha256-0000old"), status="Completed")
    op = submit_operator()
    expect_deferral(op, make_context(op))
    assert workspace.submit_calls == [job_name()] and len(workspace.jobs) == 2


def test_after_a_failed_attempt_the_next_attempt_is_submitted(workspace):
    base = job_name()
    workspace.add_job(base, status="Failed")
    op = submit_operator()
    deferred = expect_deferral(op, make_context(op))
    assert workspace.submit_calls == [f"{base}-a2"] and deferred.trigger.job_name == f"{base}-a2"
    assert workspace.jobs[base].status == "Failed"


def test_force_new_job_retrains_despite_a_completed_job(workspace):
    base = job_name()
    workspace.add_job(base, status="Completed")
    op = submit_operator(force_new_job=True)
    deferred = expect_deferral(op, make_context(op))
    assert workspace.submit_calls == [f"{base}-a2"] and deferred.trigger.job_name == f"{base}-a2"


def test_every_attempt_used_up_raises_without_submitting(workspace):
    base = job_name()
    workspace.add_job(base, status="Failed")
    workspace.add_job(f"{base}-a2", status="Canceled")
    op = submit_operator(max_attempts=2)
    with pytest.raises(AzureMLError, match=rf"AML job '{base}': all 2 attempts .*{base}-a2\) exist"):
        op.execute(make_context(op))
    assert workspace.submit_calls == []


def test_a_compute_of_the_wrong_kind_is_refused_before_anything_is_submitted(workspace):
    op = submit_operator(compute="arc-k8s")
    with pytest.raises(AzureMLError, match=r"compute 'arc-k8s': expected kind 'VirtualMachine', found 'kubernetes'"):
        op.execute(make_context(op))
    assert workspace.jobs == {}


# --- resuming with a bad event ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plan", "error", "exc", "message"),
    [
        (("Queued", "Running", "Failed"), JOB_ERROR, AzureMLJobFailedError,
         r"AML job {name} failed \(status Failed, expected Completed\): " + JOB_ERROR.replace("(", r"\(")),
        (("Queued", "Running", "Canceled"), None, AzureMLJobFailedError,
         r"AML job {name} failed \(status Canceled, expected Completed\): the job reported no error message"),
    ],
    ids=["failed", "canceled-in-studio"],
)
def test_a_job_that_ends_badly_while_deferred_fails_the_task_with_its_own_error(workspace, plan, error, exc, message):
    name = job_name()
    workspace.script(name, plan=plan, error=error)
    op = submit_operator()
    ctx = make_context(op)
    deferred = expect_deferral(op, ctx)
    event = run_trigger(deferred.trigger)
    with pytest.raises(exc, match=message.format(name=name)) as info:
        resume(deferred, ctx, event)
    assert workspace.studio_url(name) in str(info.value)


def test_a_trigger_error_fails_the_task_naming_the_job(workspace):
    name = job_name()
    op = submit_operator()
    ctx = make_context(op)
    deferred = expect_deferral(op, ctx)
    del workspace.jobs[name]  # deleted from the workspace while the task was deferred
    event = run_trigger(deferred.trigger)
    assert event["status"] == EVENT_ERROR
    with pytest.raises(AzureMLError, match=rf"AML job {name}: AzureMLError: AML job '{name}' not found") as info:
        resume(deferred, ctx, event)
    assert type(info.value) is AzureMLError  # retryable, unlike a job that failed


@pytest.mark.parametrize(
    ("overrides", "task_started_ago", "job_created_ago", "reason", "limit"),
    [
        ({"job_timeout": 60}, timedelta(0), timedelta(minutes=10), "job_timeout", r"\(job timeout 60\.0 s\)"),
        ({"execution_timeout": timedelta(minutes=2)}, timedelta(minutes=3), timedelta(0), "execution_timeout",
         r"\(the task's execution_timeout 0:02:00\)"),
    ],
    ids=["job_timeout", "execution_timeout"],
)
def test_a_passed_deadline_cancels_the_job_and_fails_naming_the_job_and_the_limit(
    workspace, overrides, task_started_ago, job_created_ago, reason, limit
):
    now = utcnow()
    name = job_name()
    created = now - job_created_ago
    workspace.add_job(name, status="Running", created_at=created)
    op = submit_operator(**overrides)
    ctx = make_context(op, start_date=now - task_started_ago)
    deferred = expect_deferral(op, ctx)

    trigger = deferred.trigger
    if reason == "job_timeout":
        expected_deadline = created.timestamp() + 60
    else:
        expected_deadline = (now - task_started_ago).timestamp() + 120
    assert (trigger.deadline_reason, trigger.deadline) == (reason, pytest.approx(expected_deadline))
    assert deferred.timeout == timedelta(seconds=DEFERRAL_GRACE_S)  # the deadline has passed already

    event = run_trigger(trigger)
    assert (event["status"], event["canceled"], event["job_status"]) == (EVENT_TIMEOUT, True, "Canceled")
    assert workspace.jobs[name].status == "Canceled" and workspace.cancel_requests == [name]
    with pytest.raises(AzureMLJobTimeoutError, match=rf"AML job {name} passed its deadline and was canceled.*{limit}"):
        resume(deferred, ctx, event, **overrides)


def test_a_deferral_that_airflow_timed_out_cancels_the_stored_job(workspace):
    name = job_name()
    workspace.add_job(name, status="Running")
    op = submit_operator()
    ctx = make_context(op, store=FakeTaskStateStore({"azureml_job_name": name}))
    with pytest.raises(TaskDeferralTimeout):
        op.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, ctx)
    assert workspace.jobs[name].status == "Canceled" and workspace.cancel_requests == [name]


# --- AzureMLSubmitJobOperator: waiting in the worker -------------------------------------------------
def test_waiting_in_the_worker_follows_the_job_to_completed(workspace):
    name = job_name()
    workspace.script(name, plan=("Queued", "Preparing", "Running", "Running", "Finalizing", "Completed"))
    op = submit_operator(deferrable=False)
    ctx = make_context(op)

    result = op.execute(ctx)

    assert workspace.jobs[name].history == ["NotStarted", "Queued", "Preparing", "Running", "Running", "Finalizing",
                                            "Completed"]
    assert result == {"job_name": name, "status": "Completed", "studio_url": workspace.studio_url(name),
                      "outputs": {"model": job_output_uri(name, "model")}, "duration_s": 754.5}
    assert ctx["task_state_store"].get("azureml_job_name") == name
    assert LOG_OFFSET_XCOM_KEY not in ctx["ti"].xcoms  # only a deferral keeps a log position
    assert workspace.submit_calls == [name]


def test_waiting_in_the_worker_on_a_failed_job_raises_with_the_jobs_own_error(workspace):
    name = job_name()
    workspace.script(name, plan=("Queued", "Running", "Failed"), error=JOB_ERROR)
    op = submit_operator(deferrable=False)
    with pytest.raises(AzureMLJobFailedError, match=rf"AML job {name} failed \(status Failed.*KeyError: column 'fail"):
        op.execute(make_context(op))
    assert workspace.jobs[name].status == "Failed"


def test_killing_the_task_while_it_waits_in_the_worker_cancels_the_job(workspace):
    name = job_name()
    workspace.script(name, plan=("Queued", "Running", "Running", "Running", "Completed"))
    op = submit_operator(deferrable=False)
    # The kill arrives while the worker polls: after the job's third read (the trigger loop's second).
    workspace.on_read[(name, 3)] = op.on_kill

    with pytest.raises(AzureMLJobFailedError, match=rf"AML job {name} failed \(status Canceled"):
        op.execute(make_context(op))
    assert workspace.cancel_requests == [name]
    assert "Completed" not in workspace.jobs[name].history


def test_killing_the_task_after_its_job_finished_cancels_nothing(workspace):
    name = job_name()
    op = submit_operator(deferrable=False)
    op.execute(make_context(op))
    op.on_kill()
    assert workspace.cancel_requests == [] and workspace.jobs[name].status == "Completed"


# --- AzureMLJobSensor: the same trigger events as the operator ----------------------------------------
def sensor_on(workspace: FakeWorkspace, monkeypatch: pytest.MonkeyPatch, name: str, *, after: tuple[str, ...],
              **kwargs: Any) -> tuple[AzureMLJobSensor, dict[str, Any], dict[str, Any]]:
    """A sensor deferred on a job submitted elsewhere that then moves through ``after``; and its event."""
    monkeypatch.setattr(azureml_sensors, "AzureMLHook", FakeAzureMLHook)
    workspace.add_job(name, status="Queued", script=JobScript(plan=(), error=JOB_ERROR)).plan = list(after)
    sensor = AzureMLJobSensor(task_id="wait", job_name=name, poll_policy=FAST_POLLS, deferrable=True, dag=new_dag(),
                              **kwargs)
    ctx = make_context(sensor)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    return sensor, ctx, run_trigger(deferred.value.trigger)


@pytest.mark.parametrize("end", ["Completed", "Failed", "Canceled"])
def test_the_sensor_finishes_on_success_and_raises_the_jobs_own_error_on_failed(workspace, monkeypatch, end):
    sensor, ctx, event = sensor_on(workspace, monkeypatch, "trained-elsewhere", after=("Running", end))

    assert (event["status"], event["job_status"]) == (EVENT_SUCCESS if end == "Completed" else EVENT_FAILED, end)
    if end == "Completed":
        result = sensor.execute_complete(ctx, event)
        assert (result["status"], result["outputs"]) == ("Completed", {"model": job_output_uri(event["job_name"],
                                                                                                 "model")})
    else:
        with pytest.raises(AzureMLJobFailedError, match=f"AML job trained-elsewhere ended {end}"):
            sensor.execute_complete(ctx, event)


def test_the_sensor_raises_its_timeout_on_a_timeout_event_and_leaves_the_job_running(workspace, monkeypatch):
    sensor, ctx, event = sensor_on(workspace, monkeypatch, "long-job", after=("Running",), timeout=0.05)

    assert (event["status"], event["canceled"], event["job_status"]) == (EVENT_TIMEOUT, False, "Running")
    with pytest.raises(AzureMLJobTimeoutError, match="AML job long-job passed its deadline"):
        sensor.execute_complete(ctx, event)
    assert workspace.jobs["long-job"].status == "Running" and workspace.cancel_requests == []


def test_the_sensor_raises_a_retryable_error_on_an_error_event(workspace, monkeypatch):
    workspace.on_read[("gone-job", 1)] = lambda: workspace.jobs.pop("gone-job")  # deleted after the first look
    sensor, ctx, event = sensor_on(workspace, monkeypatch, "gone-job", after=())

    assert event["status"] == EVENT_ERROR
    with pytest.raises(AzureMLError, match="AML job 'gone-job' not found") as info:
        sensor.execute_complete(ctx, event)
    assert type(info.value) is AzureMLError  # retryable, unlike a job that failed


# --- EvaluateGateOperator -------------------------------------------------------------------------
def gate_operator(**overrides: Any) -> EvaluateGateOperator:
    """evaluate_gate with register_model downstream, as in the DAG."""
    with new_dag():
        gate = EvaluateGateOperator(
            task_id="evaluate_gate", job_name=overrides.pop("job_name", "train-job-1"), model_name=MODEL,
            primary_metric="roc_auc", tolerance=overrides.pop("tolerance", 0.02), **overrides,
        )
        register = AzureMLRegisterModelOperator(
            task_id="register_model", job_name="train-job-1", model_name=MODEL, partition=PARTITION,
            data_fingerprint=FINGERPRINT, git_commit="4f1c2e9", training_environment="edge-training-env:3",
        )
        gate >> register
    return gate


def registry_with_production(workspace: FakeWorkspace) -> None:
    """v1 is in production (roc_auc 0.90); v2 is newer and better on paper but was never promoted."""
    workspace.add_model(MODEL, tags={"stage": "production", "metrics": json.dumps({"roc_auc": 0.90})})
    workspace.add_model(MODEL, tags={"metrics": json.dumps({"roc_auc": 0.99})}, stage="Production")


def test_the_gate_passes_a_model_no_worse_than_production(workspace):
    registry_with_production(workspace)
    workspace.add_job("train-job-1", status="Completed", script=JobScript(plan=(), files=metrics_file(roc_auc=0.89)))
    op = gate_operator()
    result = op.execute(make_context(op))
    assert result["passed"] is True
    assert (result["new_value"], result["baseline_value"], result["baseline_version"]) == (0.89, 0.90, "1")
    assert (result["job_name"], result["model_name"], result["tolerance"]) == ("train-job-1", MODEL, 0.02)


def test_the_gate_skips_the_downstream_tasks_for_a_worse_model_and_keeps_its_decision(workspace):
    registry_with_production(workspace)
    workspace.add_job("train-job-1", status="Completed", script=JobScript(plan=(), files=metrics_file(roc_auc=0.85)))
    op = gate_operator()
    ctx = make_context(op)
    with pytest.raises(DownstreamTasksSkipped) as info:
        op.execute(ctx)
    assert list(info.value.tasks) == ["register_model"]
    decision = ctx["ti"].xcoms["return_value"]
    assert decision["passed"] is False and decision["baseline_version"] == "1"
    assert "0.8500 is worse than version 1's 0.9000 by 0.0500" in decision["reason"]
    assert ctx["ti"].xcoms["skipmixin_key"] == {"skipped": ["register_model"]}


def test_the_gate_passes_the_first_model_when_nothing_is_in_production(workspace):
    workspace.add_model(MODEL, tags={"metrics": json.dumps({"roc_auc": 0.99})})  # never promoted
    workspace.add_job("train-job-1", status="Completed", script=JobScript(plan=(), files=metrics_file(roc_auc=0.6)))
    op = gate_operator()
    result = op.execute(make_context(op))
    assert result["passed"] is True and result["reason"] == "no production model yet"
    assert result["baseline_version"] is None


@pytest.mark.parametrize("policy", ["latest", "stage"])
def test_the_gate_compares_with_the_version_its_policy_picks(workspace, policy):
    registry_with_production(workspace)  # v2 is both the latest and the one in AML's Production stage
    workspace.add_job("train-job-1", status="Completed", script=JobScript(plan=(), files=metrics_file(roc_auc=0.91)))
    op = gate_operator(baseline_policy=policy)
    with pytest.raises(DownstreamTasksSkipped):
        op.execute(make_context(op))


@pytest.mark.parametrize(
    ("files", "exc", "message"),
    [
        ({"model": {"model.pkl": "<pickle>"}}, ModelOutputError,
         r"AML job 'train-job-1': expected metrics.json in output 'model', found \['model.pkl'\]"),
        ({"model": {"metrics.json": "{roc_auc: 0.9"}}, ModelOutputError, r"metrics.json is not valid JSON"),
        (metrics_file(roc_auc=float("nan")), EvaluationGateError,
         r"AML job train-job-1: metric 'roc_auc' must be a number, found NaN"),
        (metrics_file(accuracy=0.93), EvaluationGateError,
         r"AML job train-job-1: expected metric 'roc_auc', found only \['accuracy'\]"),
    ],
    ids=["no-metrics-file", "bad-json", "nan", "missing-metric"],
)
def test_the_gate_refuses_unusable_metrics_at_once(workspace, files, exc, message):
    registry_with_production(workspace)
    workspace.add_job("train-job-1", status="Completed", script=JobScript(plan=(), files=files))
    op = gate_operator()
    ctx = make_context(op)
    with pytest.raises(exc, match=message):
        op.execute(ctx)
    assert ctx["ti"].xcoms == {}  # no decision, no skip: the task fails (and is not retried)


def test_the_gate_refuses_a_production_model_without_metrics(workspace):
    workspace.add_model(MODEL, tags={"stage": "production"})
    workspace.add_job("train-job-1", status="Completed")
    op = gate_operator()
    with pytest.raises(EvaluationGateError, match=r"baseline model equipment-failure version 1: expected a 'metrics'"):
        op.execute(make_context(op))


# --- AzureMLRegisterModelOperator -----------------------------------------------------------------
TRAIN_JOB = "edge_training-2026-11-10-sha256-9f2c4e1ab"


def register_operator(**overrides: Any) -> AzureMLRegisterModelOperator:
    kwargs: dict[str, Any] = dict(
        task_id="register_model", job_name=TRAIN_JOB, model_name=MODEL, partition=PARTITION,
        data_fingerprint=FINGERPRINT, git_commit="4f1c2e9", training_environment="edge-training-env:3",
        extra_tags={"owner": "data-ops"}, dag=new_dag(),
    )
    kwargs.update(overrides)
    return AzureMLRegisterModelOperator(**kwargs)


def completed_training_job(workspace: FakeWorkspace) -> None:
    metrics = {"roc_auc": 0.91, "f1": 0.8, "n_rows": 1200, "calibrated": True, "confusion": [[90, 4], [6, 20]]}
    workspace.add_job(TRAIN_JOB, status="Completed", script=JobScript(plan=(), files=metrics_file(**metrics)))


def test_register_creates_the_next_version_tagged_with_its_lineage(workspace):
    workspace.add_model(MODEL, tags={"stage": "production"})
    completed_training_job(workspace)
    op = register_operator()
    ctx = make_context(op)

    result = op.execute(ctx)

    assert [m.version for m in workspace.models[MODEL]] == ["1", "2"]
    model = workspace.models[MODEL][-1]
    assert model.path == job_output_uri(TRAIN_JOB, "model")
    assert model.description == f"Trained by AML job {TRAIN_JOB} on partition {PARTITION}"
    assert model.tags == {
        "partition": PARTITION,
        "data_fingerprint": FINGERPRINT,
        "job_name": TRAIN_JOB,
        "dag_id": DAG_ID,
        "run_id": RUN_ID,
        "git_commit": "4f1c2e9",
        "metrics": '{"f1":0.8,"n_rows":1200,"roc_auc":0.91}',  # numbers only: no flags, no matrices
        "training_environment": "edge-training-env:3",
        "owner": "data-ops",
    }
    studio_url = f"https://ml.azure.com/model/{MODEL}:2/details?wsid={WSID}"
    assert result == {"name": MODEL, "version": "2", "uri": f"azureml://models/{MODEL}/versions/2",
                      "workspace": WORKSPACE_URI, "job_name": TRAIN_JOB, "studio_url": studio_url, "created": True}
    assert ctx["ti"].xcoms["azureml_model_url"] == studio_url
    event = ctx["outlet_events"][model_asset(MODEL)]
    assert event.extra == {"model_name": MODEL, "model_version": "2", "model_uri": result["uri"],
                           "job_name": TRAIN_JOB, "partition": PARTITION, "data_fingerprint": FINGERPRINT,
                           "created": True}
    assert event.partition_keys == {PARTITION}


def test_a_rerun_of_register_returns_the_version_holding_the_job_and_registers_nothing(workspace):
    completed_training_job(workspace)
    first = register_operator().execute(make_context(register_operator()))
    workspace.add_model(MODEL, tags={"job_name": "some-later-job"})  # another job's version on top

    op = register_operator()
    ctx = make_context(op, run_id=RERUN_ID)
    again = op.execute(ctx)

    assert [m.version for m in workspace.models[MODEL]] == ["1", "2"]
    assert again == {**first, "created": False}
    assert again["version"] == "1"
    assert ctx["outlet_events"][model_asset(MODEL)].extra["created"] is False


def test_the_model_asset_follows_the_rendered_model_name(workspace):
    """The DAG declares the configured model's asset and an alias: a run registering that model updates
    the asset (with its partition key); a run given another model_name updates that model's asset
    through the alias, and leaves the configured model's asset alone."""
    from airflow.sdk import AssetAlias

    completed_training_job(workspace)
    alias = AssetAlias("edge_training_model")
    declared = [model_asset(MODEL), alias]

    op = register_operator(outlets=declared)
    ctx = make_context(op)
    op.execute(ctx)
    assert ctx["outlet_events"][model_asset(MODEL)].partition_keys == {PARTITION}
    assert ctx["outlet_events"][alias].asset_alias_events == []

    other = "pump-failure"
    op = register_operator(model_name=other, outlets=declared)
    ctx = make_context(op)
    op.execute(ctx)
    (event,) = ctx["outlet_events"][alias].asset_alias_events
    assert event.dest_asset_key.uri == f"azureml://models/{other}" == model_asset(other).uri
    assert event.extra["model_name"] == other and event.extra["partition"] == PARTITION
    untouched = ctx["outlet_events"][model_asset(MODEL)]
    assert untouched.extra == {} and untouched.partition_keys == set()


def test_register_refuses_a_job_that_has_not_completed(workspace):
    workspace.add_job(TRAIN_JOB, status="Running")
    op = register_operator()
    with pytest.raises(ModelRegistrationError, match=rf"{TRAIN_JOB}: expected status Completed .*found Running"):
        op.execute(make_context(op))
    assert workspace.models == {}


def test_register_takes_metrics_given_instead_of_reading_the_output(workspace):
    workspace.add_job(TRAIN_JOB, status="Completed", script=JobScript(plan=(), files={"model": {"model.pkl": "x"}}))
    op = register_operator(metrics={"roc_auc": 0.88, "note": "manual"})
    assert op.execute(make_context(op))["created"] is True
    assert workspace.models[MODEL][0].tags["metrics"] == '{"roc_auc":0.88}'
