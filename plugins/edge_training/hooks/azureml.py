"""Azure Machine Learning: job and model calls through the real azure-ai-ml SDK, and AML's status vocabulary.

Operators, the trigger and the sensor only call these methods. The connection's form and parsing live in
azureml_connection, job naming in azureml_naming, the polling policy in azureml_polling, and every
azure-ai-ml private API the hook needs in azureml_sdk_private.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from edge_training.exceptions import (
    AzureMLConnectionError,
    AzureMLError,
    AzureMLJobExistsError,
    AzureMLTransientError,
    ModelOutputError,
    ModelRegistrationError,
)
from edge_training.hooks import azureml_sdk_private as sdk_private
from edge_training.hooks.azure_logging import client_logging_kwargs, quiet_experimental_notices
from edge_training.hooks.azureml_connection import CONN_TYPE, AzureMLConnectionConfig, parse_connection
from edge_training.retry import TRANSIENT_HTTP_STATUSES, parse_retry_after

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

_CLOUD_ENV = "AZUREML_CURRENT_CLOUD"
_OPEN_CLIENTS_LOCK = threading.Lock()
DEFAULT_CONN_ID = "azureml_default"

# --- job status vocabulary (azure-ai-ml JobStatus / run history) ---------------------------------
STATUS_COMPLETED = "Completed"
#: A job in one of these states will not change again.
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})
#: Terminal states that mean the job did not produce its result; the operator raises on them.
FAILED_STATUSES = frozenset({"Failed", "Canceled", "NotResponding", "Paused"})
#: The job may still be running: attach to it rather than submit another one.
IN_PROGRESS_STATUSES = frozenset(
    {
        "NotStarted",
        "Starting",
        "Provisioning",
        "Preparing",
        "Queued",
        "Running",
        "Finalizing",
        "CancelRequested",
        "Unknown",
    }
)
#: States in which the job's own log is being written; the trigger reads the log only then.
LOGGING_STATUSES = frozenset({"Running", "Finalizing", "CancelRequested"})


# --- log reading (pure part) ---------------------------------------------------------------------
_STREAM_LOG = re.compile(r"user_logs/std_log[\D]*[0]*(?:_ps)?\.txt")
_LEGACY_LOG = re.compile(r"azureml-logs/[\d]{2}.+\.txt")


def pick_log_file(names: list[str]) -> str | None:
    """The log AML's own ``jobs.stream`` follows: ``user_logs/std_log.txt``, else the legacy driver log."""
    for pattern in (_STREAM_LOG, _LEGACY_LOG):
        matches = sorted(n for n in names if pattern.match(n))
        if matches:
            return matches[0]
    return None


def split_complete_lines(chunk: bytes, *, final: bool) -> tuple[list[str], int]:
    """Lines in ``chunk`` and how many bytes they used; a partial last line waits unless ``final``."""
    end = len(chunk) if final else chunk.rfind(b"\n") + 1
    if end <= 0:
        return [], 0
    text = chunk[:end].decode("utf-8", errors="replace")
    return text.splitlines(), end


@dataclass(frozen=True)
class JobState:
    """A JSON-safe view of an AML job, the shape the trigger and operators pass around."""

    name: str
    status: str
    studio_url: str | None
    experiment_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    created_at: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == STATUS_COMPLETED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogChunk:
    """New complete lines of a job's log, the offset after them, and how many bytes the read returned.

    ``new_bytes`` counts every byte past the asked offset, a partial last line included: non-zero means
    the log grew since that offset (the trigger reads a log that stays quiet less and less often).
    """

    lines: list[str]
    offset: int
    log_file: str | None = None
    new_bytes: int = 0


@dataclass(frozen=True)
class JobRunInfo:
    """What run history knows after the fact: the job's own error and its start/end times."""

    error: str | None
    started_at: str | None
    ended_at: str | None

    @property
    def duration_s(self) -> float | None:
        if not (self.started_at and self.ended_at):
            return None
        return round(
            (datetime.fromisoformat(self.ended_at) - datetime.fromisoformat(self.started_at)).total_seconds(), 3
        )


@dataclass(frozen=True)
class CommandJobSpec:
    """What a command job runs, where and on which data: the operator's arguments as one value for the hook.

    ``inputs`` values are URIs (a folder) or dicts of ``azure.ai.ml.Input`` arguments; ``outputs``
    values are None (a uri_folder the service places) or ``Output`` argument dicts. ``code`` is a
    local folder the SDK uploads as the job's snapshot. ``display_name`` None: the job's name.
    """

    command: str
    environment: str
    compute: str
    code: str | None = None
    instance_type: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    experiment_name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    environment_variables: Mapping[str, Any] = field(default_factory=dict)


def job_output_uri(job_name: str, output_name: str) -> str:
    """The AML URI of a job's named output (what model registration and downstream jobs accept)."""
    return f"azureml://jobs/{job_name}/outputs/{output_name}"


class AzureMLHook(BaseHook):
    """Talks to one AML workspace through azure-ai-ml, with one MLClient per hook.

    Use it as a context manager (or call ``close()``): the MLClient's service clients, the
    credential and the log transport hold HTTP sessions.

    :param azureml_conn_id: an ``azureml`` connection.
    :param retry_total: per-request retries of azure-core's own retry policy; None keeps the SDK's
        default (10, which also honours Retry-After). The trigger passes 0 so that its own backoff,
        jitter and Retry-After handling decide, and its request counts stay honest.
    :param connection: an already fetched Connection (the trigger fetches it asynchronously).
    """

    #: Hooks with a live MLClient in this process, and AZUREML_CURRENT_CLOUD as it was before the first.
    _open_clients = 0
    _saved_cloud_env: str | None = None

    conn_name_attr = "azureml_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Azure Machine Learning (edge training)"

    def __init__(
        self,
        *,
        azureml_conn_id: str = DEFAULT_CONN_ID,
        retry_total: int | None = None,
        connection: Connection | None = None,
    ) -> None:
        super().__init__()
        self.azureml_conn_id = azureml_conn_id
        self.retry_total = retry_total
        self._connection = connection
        self._config: AzureMLConnectionConfig | None = None
        self._client: MLClient | None = None
        self._credential: TokenCredential | None = None
        self._log_pipeline: Any = None
        # One hook may serve many threads at once (the triggers of one connection share it): its
        # clients are built once, under this lock, and then used concurrently (azure-core pipelines
        # and their requests sessions are thread-safe).
        self._build_lock = threading.Lock()

    # -- connection / client ----------------------------------------------------------------------
    @property
    def config(self) -> AzureMLConnectionConfig:
        if self._config is None:
            conn = self._connection or self.get_connection(self.azureml_conn_id)
            if conn.conn_type and conn.conn_type != CONN_TYPE:
                raise AzureMLConnectionError(
                    f"Connection {self.azureml_conn_id!r}: expected conn_type {CONN_TYPE!r}, found {conn.conn_type!r}"
                )
            self._config = parse_connection(
                self.azureml_conn_id, extra=conn.extra_dejson, login=conn.login, password=conn.password
            )
        return self._config

    def _build_credential(self) -> TokenCredential:
        from azure.identity import (
            ClientSecretCredential,
            DefaultAzureCredential,
            ManagedIdentityCredential,
            WorkloadIdentityCredential,
        )

        cfg = self.config
        # The credential's token requests log through the package's HTTP logger (see azure_logging).
        common: dict[str, Any] = client_logging_kwargs()
        if cfg.authority:
            common["authority"] = cfg.authority
        if cfg.ca_bundle:
            common["connection_verify"] = cfg.ca_bundle
        if cfg.is_custom_cloud:
            # A private authority (Stack Hub AD FS/AAD endpoint) is not in Microsoft's discovery list.
            common["disable_instance_discovery"] = True
        if cfg.auth_type == "service_principal":
            return ClientSecretCredential(cfg.tenant_id, cfg.client_id, cfg.client_secret, **common)
        if cfg.auth_type == "workload_identity":
            kwargs: dict[str, Any] = {"tenant_id": cfg.tenant_id, **common}
            if cfg.client_id:
                kwargs["client_id"] = cfg.client_id
            if cfg.federated_token_file:
                kwargs["token_file_path"] = cfg.federated_token_file
            return WorkloadIdentityCredential(**kwargs)
        if cfg.auth_type == "managed_identity":
            mi_kwargs: dict[str, Any] = client_logging_kwargs()
            if cfg.client_id:
                mi_kwargs["client_id"] = cfg.client_id
            if cfg.ca_bundle:
                mi_kwargs["connection_verify"] = cfg.ca_bundle
            return ManagedIdentityCredential(**mi_kwargs)
        default_kwargs: dict[str, Any] = dict(common)
        default_kwargs.pop("disable_instance_discovery", None)
        if cfg.tenant_id:
            default_kwargs["additionally_allowed_tenants"] = ["*"]
        if cfg.client_id:
            default_kwargs["managed_identity_client_id"] = cfg.client_id
        return DefaultAzureCredential(**default_kwargs)

    def get_conn(self) -> MLClient:
        """The hook's MLClient, built once for the connection's cloud (thread-safe)."""
        if self._client is not None:
            return self._client
        with self._build_lock:
            if self._client is None:
                self._client = self._build_client()
        return self._client

    def _build_client(self) -> MLClient:
        from azure.ai.ml import MLClient

        quiet_experimental_notices()
        cfg = self.config
        self._credential = self._build_credential()
        # The SDK records the cloud in this process's environment; when the last open hook
        # closes, the old value is put back so it does not leak into processes started later (a
        # child importing azure.ai.ml with a cloud name unknown there fails at import time).
        with _OPEN_CLIENTS_LOCK:
            if AzureMLHook._open_clients == 0:
                AzureMLHook._saved_cloud_env = os.environ.get(_CLOUD_ENV)
            AzureMLHook._open_clients += 1
        # MLClient hands its kwargs to every generated service client it builds (and the job
        # operations keep them for the run-history/dataplane clients they build later), so
        # ``logger`` reaches each one's HttpLoggingPolicy. Not reached: the SDK's own storage
        # clients for code upload/output download, and its ARM preflight client (azure_logging).
        kwargs: dict[str, Any] = {
            "cloud": cfg.cloud,
            "enable_telemetry": False,
            "show_progress": False,
            **client_logging_kwargs(),
        }
        if cfg.cloud_metadata is not None:
            kwargs["cloud_metadata"] = dict(cfg.cloud_metadata)
        if cfg.ca_bundle:
            kwargs["connection_verify"] = cfg.ca_bundle
        if self.retry_total is not None:
            kwargs["retry_total"] = self.retry_total
        return MLClient(
            credential=self._credential,
            subscription_id=cfg.subscription_id,
            resource_group_name=cfg.resource_group,
            workspace_name=cfg.workspace_name,
            **kwargs,
        )

    @property
    def client(self) -> MLClient:
        return self.get_conn()

    def close(self) -> None:
        """Close every HTTP session the MLClient, the credential and the log reader opened."""
        client, self._client = self._client, None
        if client is not None:
            # Generated service clients (one HTTP session each) hang off the MLClient; the job
            # operations create their run-history/dataplane clients lazily.
            for item in sdk_private.mlclient_http_closables(client):
                self._close_quietly(item)
            with _OPEN_CLIENTS_LOCK:
                AzureMLHook._open_clients -= 1
                if AzureMLHook._open_clients == 0:
                    if AzureMLHook._saved_cloud_env is None:
                        os.environ.pop(_CLOUD_ENV, None)
                    else:
                        os.environ[_CLOUD_ENV] = AzureMLHook._saved_cloud_env
        credential, self._credential = self._credential, None
        self._close_quietly(credential)
        pipeline, self._log_pipeline = self._log_pipeline, None
        if pipeline is not None:
            self._close_quietly(sdk_private.pipeline_transport(pipeline))

    def _close_quietly(self, item: Any) -> None:
        """Closing is cleanup: a session that fails to close must not hide the task's real outcome."""
        close = getattr(item, "close", None)
        if not callable(close):
            return
        try:
            close()
        except Exception as err:  # noqa: BLE001 - logged, and nothing else depends on it
            self.log.debug("Closing %s failed: %s", type(item).__name__, err)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: authenticate and read the workspace."""
        try:
            with self._translated(f"Reading workspace {self.config.workspace_name!r}"):
                workspace = self.client.workspaces.get(self.config.workspace_name)
            return True, f"Workspace {workspace.name} in {workspace.location} answers"
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        finally:
            self.close()

    def __enter__(self) -> AzureMLHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn retryable azure-core errors into AzureMLTransientError (with Retry-After); keep the rest."""
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        try:
            yield
        except (ServiceRequestError, ServiceResponseError) as err:
            raise AzureMLTransientError(
                f"{what}: no answer from the AML endpoint ({type(err).__name__}: {err})"
            ) from err
        except HttpResponseError as err:
            status = getattr(err, "status_code", None) or getattr(getattr(err, "response", None), "status_code", None)
            if status in TRANSIENT_HTTP_STATUSES:
                headers = getattr(getattr(err, "response", None), "headers", None) or {}
                raise AzureMLTransientError(
                    f"{what}: AML answered HTTP {status}",
                    status_code=status,
                    retry_after_s=parse_retry_after(headers.get("Retry-After") or headers.get("retry-after")),
                ) from err
            raise

    @contextlib.contextmanager
    def _storage_trust(self) -> Iterator[None]:
        """Let the SDK's own storage clients trust the connection's CA while they run.

        azure-ai-ml builds its blob clients (code snapshot upload, output download) itself, with no
        way to pass ``connection_verify``; requests then reads ``REQUESTS_CA_BUNDLE``, which is how
        Microsoft documents the SDKs against Azure Stack Hub. The bundle set here is the public
        roots plus the connection's CA (adding trust, never removing it), and only for the call.
        """
        ca_bundle = self.config.ca_bundle
        if not ca_bundle:
            yield
            return
        bundle = _combined_ca_bundle(ca_bundle)
        saved = os.environ.get("REQUESTS_CA_BUNDLE")
        os.environ["REQUESTS_CA_BUNDLE"] = bundle
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("REQUESTS_CA_BUNDLE", None)
            else:
                os.environ["REQUESTS_CA_BUNDLE"] = saved

    # -- jobs -------------------------------------------------------------------------------------
    def _job_state(self, job: Any) -> JobState:
        outputs: dict[str, str] = {}
        for out_name, out in (getattr(job, "outputs", None) or {}).items():
            if out_name == "default":
                continue
            path = getattr(out, "path", None) if out is not None else None
            outputs[out_name] = str(path) if path else job_output_uri(job.name, out_name)
        created = getattr(getattr(job, "creation_context", None), "created_at", None)
        return JobState(
            name=job.name,
            status=_status_text(job.status),
            studio_url=getattr(job, "studio_url", None),
            experiment_name=getattr(job, "experiment_name", None),
            tags={str(k): str(v) for k, v in (job.tags or {}).items()},
            outputs=outputs,
            created_at=created.isoformat() if isinstance(created, datetime) else (str(created) if created else None),
        )

    def find_job(self, name: str) -> JobState | None:
        """The job, or None when the workspace has no job of that name."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with self._translated(f"Getting AML job {name!r}"):
                return self._job_state(self.client.jobs.get(name))
        except ResourceNotFoundError:
            return None

    def get_job(self, name: str) -> JobState:
        job = self.find_job(name)
        if job is None:
            raise AzureMLError(
                f"AML job {name!r} not found in workspace {self.config.workspace_name!r} "
                f"(resource group {self.config.resource_group!r})"
            )
        return job

    def submit_command_job(self, name: str, spec: CommandJobSpec) -> JobState:
        """Create a command job named ``name`` from ``spec``; the SDK uploads ``spec.code`` as a snapshot first."""
        from azure.ai.ml import Input, Output
        from azure.ai.ml import command as command_job

        quiet_experimental_notices()  # the SDK job object is built before the client may be
        if spec.code is not None and not Path(spec.code).is_dir():
            raise AzureMLError(f"AML job {name!r}: code directory {spec.code!r} does not exist or is not a directory")
        job_inputs = {
            k: Input(**v) if isinstance(v, Mapping) else Input(type="uri_folder", path=str(v))
            for k, v in spec.inputs.items()
        }
        job_outputs = {k: Output(**{"type": "uri_folder", **(dict(v) if v else {})}) for k, v in spec.outputs.items()}
        optional: dict[str, Any] = {"instance_type": spec.instance_type} if spec.instance_type else {}
        job = command_job(
            name=name,
            code=spec.code,
            command=spec.command,
            environment=spec.environment,
            compute=spec.compute,
            inputs=job_inputs,
            outputs=job_outputs,
            experiment_name=spec.experiment_name,
            display_name=spec.display_name or name,
            description=spec.description,
            tags={str(k): str(v) for k, v in spec.tags.items()},
            environment_variables={str(k): str(v) for k, v in spec.environment_variables.items()},
            **optional,
        )
        from azure.core.exceptions import HttpResponseError

        try:
            with self._translated(f"Submitting AML job {name!r}"), self._storage_trust():
                created = self.client.jobs.create_or_update(job)
        except HttpResponseError as err:
            # Refused while a job of this name exists: it has another spec (a job's spec is immutable), so
            # someone submitted it since the caller looked. The stack's double answers 409; 400 is taken
            # the same way. Named, so the caller can follow that job instead.
            status = getattr(err, "status_code", None)
            if status in (400, 409) and self.find_job(name) is not None:
                raise AzureMLJobExistsError(
                    f"AML job {name!r} already exists in workspace {self.config.workspace_name!r} with another "
                    f"spec (HTTP {status}): {err.message}"
                ) from err
            raise
        self.log.info("Submitted AML job %s (status %s)", created.name, _status_text(created.status))
        return self._job_state(created)

    def cancel_job(self, name: str, *, wait_s: float = 60.0) -> JobState:
        """Ask AML to cancel the job and wait (bounded) for the cancel operation; a finished job is left alone."""
        job = self.get_job(name)
        if job.is_terminal:
            self.log.info("AML job %s is already %s; nothing to cancel", name, job.status)
            return job
        with self._translated(f"Canceling AML job {name!r}"):
            poller = self.client.jobs.begin_cancel(name)
            poller.result(timeout=wait_s)
        job = self.get_job(name)
        self.log.info("Cancel requested for AML job %s; status now %s", name, job.status)
        return job

    def get_compute_kind(self, compute: str) -> str:
        """``virtualmachine``, ``kubernetes``... of an attached compute, to check a job's target early."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with self._translated(f"Getting AML compute {compute!r}"):
                found = self.client.compute.get(compute)
        except ResourceNotFoundError as err:
            raise AzureMLError(
                f"AML compute {compute!r} not found in workspace {self.config.workspace_name!r}"
            ) from err
        return str(found.type).lower()

    def _run_details(self, name: str) -> Any:
        with self._translated(f"Reading run history of AML job {name!r}"):
            return sdk_private.get_run_details(self.client, name)

    def get_run_info(self, name: str) -> JobRunInfo:
        """The job's own error message (if any) and its start/end time, from run history."""
        details = self._run_details(name)
        message = None
        error = getattr(details, "error", None)
        inner = getattr(error, "error", None)
        if inner is not None:
            code = getattr(inner, "code", None)
            text = getattr(inner, "message", None) or ""
            message = f"{code}: {text}" if code else text
        def iso(value: Any) -> str | None:
            return value.isoformat() if isinstance(value, datetime) else None
        return JobRunInfo(
            error=message or None,
            started_at=iso(getattr(details, "start_time_utc", None)),
            ended_at=iso(getattr(details, "end_time_utc", None)),
        )

    def _log_http(self) -> Any:
        """A small azure-core pipeline for the log blob (run history hands out SAS URLs to storage)."""
        if self._log_pipeline is not None:
            return self._log_pipeline
        with self._build_lock:
            if self._log_pipeline is not None:
                return self._log_pipeline
            from azure.core.pipeline import Pipeline
            from azure.core.pipeline.policies import RetryPolicy
            from azure.core.pipeline.transport import RequestsTransport

            verify: Any = self.config.ca_bundle or True
            retries = 3 if self.retry_total is None else self.retry_total
            self._log_pipeline = Pipeline(
                transport=RequestsTransport(connection_verify=verify),
                policies=[RetryPolicy(retry_total=retries)],
            )
        return self._log_pipeline

    def log_url(self, name: str) -> tuple[str | None, str | None]:
        """The job's log file (the one AML's own ``jobs.stream`` follows) and its URL, from run history.

        (None, None) while the job has no log yet. The URL is a SAS URL to the log blob: a caller may
        keep it and read the blob with :meth:`read_log_at` until it stops working (it expires), then
        ask again, instead of asking run history before every read.
        """
        details = self._run_details(name)
        files = dict(getattr(details, "log_files", None) or {})
        log_file = pick_log_file(list(files))
        if log_file is None:
            return None, None
        return log_file, files[log_file]

    def read_log_at(
        self, name: str, url: str, offset: int = 0, *, final: bool = False, log_file: str | None = None
    ) -> LogChunk:
        """New complete lines of the log blob at ``url`` from byte ``offset`` on, and the offset after them.

        One HTTP Range request (``bytes=<offset>-``): a log that did not grow answers 416 with no body,
        so each read moves only new bytes. A partial last line is kept for the next read unless ``final``.
        """
        from azure.core.rest import HttpRequest

        request = HttpRequest("GET", url, headers={"Range": f"bytes={offset}-"})
        with self._translated(f"Reading log {log_file!r} of AML job {name!r}"):
            response = self._log_http().run(request).http_response
        status = response.status_code
        if status in (404, 416):
            return LogChunk([], offset, log_file)
        if status in TRANSIENT_HTTP_STATUSES:
            raise AzureMLTransientError(
                f"Reading log {log_file!r} of AML job {name!r}: HTTP {status}",
                status_code=status,
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status not in (200, 206):
            raise AzureMLError(f"Reading log {log_file!r} of AML job {name!r}: expected HTTP 200/206, found {status}")
        body = response.body()
        if status == 200:
            body = body[offset:]
        lines, used = split_complete_lines(body, final=final)
        return LogChunk(lines, offset + used, log_file, new_bytes=len(body))

    def read_log(self, name: str, offset: int = 0, *, final: bool = False) -> LogChunk:
        """New complete lines of the job's log from byte ``offset`` on, and the offset after them.

        Follows the same route as the SDK's ``jobs.stream``: run history lists the job's log files
        with their URLs (:meth:`log_url`), the log blob is read from ``offset`` with an HTTP Range
        request (:meth:`read_log_at`). A partial last line is kept for the next read unless ``final``.
        """
        log_file, url = self.log_url(name)
        if url is None:
            return LogChunk([], offset, None)
        return self.read_log_at(name, url, offset, final=final, log_file=log_file)

    def list_outputs(self, name: str) -> dict[str, str]:
        """Named outputs of the job as URIs (``azureml://jobs/<job>/outputs/<name>`` unless the service set a path)."""
        return dict(self.get_job(name).outputs)

    def download_job_output(self, name: str, output_name: str, destination: str | Path) -> Path:
        """Download a finished job's named output; returns the local folder holding its files."""
        destination = Path(destination)
        job = self.get_job(name)
        if not job.succeeded:
            raise AzureMLError(f"AML job {name!r}: expected status Completed to read its outputs, found {job.status}")
        uri = job.outputs.get(output_name)
        if uri is None:
            raise AzureMLError(
                f"AML job {name!r}: expected an output named {output_name!r}, found {sorted(job.outputs)}"
            )
        with self._translated(f"Downloading output {output_name!r} of AML job {name!r}"), self._storage_trust():
            if re.match(r"^azureml://(subscriptions/.+/)?datastores/", uri):
                # The output's datastore path: the SDK reads it with the datastore's own credentials.
                folder = destination / output_name
                sdk_private.download_datastore_uri(self.client, uri, str(folder))
            else:
                self.client.jobs.download(name, output_name=output_name, download_path=str(destination))
                folder = destination / "named-outputs" / output_name
        if not folder.is_dir() or not any(folder.rglob("*")):
            raise AzureMLError(
                f"AML job {name!r}: expected output {output_name!r} downloaded to {folder}, found nothing there"
            )
        return folder

    def read_job_metrics(self, name: str, *, output_name: str = "model", file_name: str = "metrics.json") -> dict:
        """The metrics file the training script wrote into the job's model output."""
        with tempfile.TemporaryDirectory(prefix="aml-metrics-") as tmp:
            folder = self.download_job_output(name, output_name, tmp)
            matches = sorted(folder.rglob(file_name))
            if not matches:
                raise ModelOutputError(
                    f"AML job {name!r}: expected {file_name} in output {output_name!r}, found "
                    f"{sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file())}"
                )
            try:
                metrics = json.loads(matches[0].read_text())
            except json.JSONDecodeError as err:
                raise ModelOutputError(f"AML job {name!r}: {file_name} is not valid JSON ({err})") from err
        if not isinstance(metrics, dict):
            raise ModelOutputError(
                f"AML job {name!r}: {file_name} must hold a JSON object, found {type(metrics).__name__}"
            )
        return metrics

    # -- models -----------------------------------------------------------------------------------
    def list_model_versions(self, name: str) -> list[Any]:
        """Every active version of a model, newest first; empty when the model does not exist yet."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with self._translated(f"Listing versions of AML model {name!r}"):
                versions = list(self.client.models.list(name=name))
        except ResourceNotFoundError:
            return []
        return sorted(versions, key=_version_key, reverse=True)

    def find_model_by_tag(self, name: str, key: str, value: str) -> Any | None:
        """The newest version of ``name`` whose tag ``key`` equals ``value``."""
        for version in self.list_model_versions(name):
            if str((version.tags or {}).get(key)) == str(value):
                return version
        return None

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
        """Register a new version of ``name`` from ``path`` (the service assigns the next version)."""
        from azure.ai.ml.entities import Model

        quiet_experimental_notices()  # the SDK object is built before the client may be
        model = Model(
            name=name,
            path=path,
            type=model_type,
            description=description,
            tags={str(k): str(v) for k, v in tags.items()},
            properties={str(k): str(v) for k, v in (properties or {}).items()},
        )
        try:
            with self._translated(f"Registering AML model {name!r} from {path!r}"):
                created = self.client.models.create_or_update(model)
        except AzureMLTransientError:
            raise
        except Exception as err:
            raise ModelRegistrationError(f"Registering AML model {name!r} from {path!r} failed: {err}") from err
        self.log.info("Registered AML model %s version %s from %s", created.name, created.version, path)
        return created

    def get_model(self, name: str, version: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with self._translated(f"Getting AML model {name}:{version}"):
                return self.client.models.get(name=name, version=str(version))
        except ResourceNotFoundError as err:
            raise ModelRegistrationError(
                f"AML model {name!r} version {version!r} not found in workspace {self.config.workspace_name!r}"
            ) from err

    def update_model_tags(self, name: str, version: str, tags: Mapping[str, Any],
                          remove: Sequence[str] = ()) -> dict[str, str]:
        """Merge ``tags`` into a model version's tags (e.g. the image reference written after a push) and
        drop the ``remove`` keys (e.g. the production mark moving to another version)."""
        model = self.get_model(name, version)
        merged = {**(model.tags or {}), **{str(k): str(v) for k, v in tags.items()}}
        for key in remove:
            merged.pop(key, None)
        model.tags = merged
        with self._translated(f"Updating tags of AML model {name}:{version}"):
            updated = self.client.models.create_or_update(model)
        return dict(updated.tags or {})

    def workspace_uri(self) -> str:
        """The workspace as a URI (``azureml://subscriptions/<id>/resourcegroups/<group>/workspaces/<name>``):
        the namespace under which its models are named for lineage (``.../models/<name>/versions/<v>``)."""
        cfg = self.config
        return (
            f"azureml://subscriptions/{cfg.subscription_id}/resourcegroups/{cfg.resource_group}"
            f"/workspaces/{cfg.workspace_name}"
        )

    def model_studio_url(self, name: str, version: str) -> str:
        """The model version's page in AML studio (portal from the cloud, workspace from the connection)."""
        cfg = self.config
        portal = "https://ml.azure.com"
        if cfg.cloud_metadata is not None:
            portal = cfg.cloud_metadata["azure_portal"].rstrip("/")
        elif cfg.cloud == "AzureChinaCloud":
            portal = "https://studio.ml.azure.cn"
        elif cfg.cloud == "AzureUSGovernment":
            portal = "https://ml.azure.us"
        wsid = (
            f"/subscriptions/{cfg.subscription_id}/resourceGroups/{cfg.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{cfg.workspace_name}"
        )
        return f"{portal}/model/{name}:{version}/details?wsid={wsid}"


def _status_text(status: Any) -> str:
    """The SDK hands statuses out as ``JobStatus`` enum members or plain strings: always the plain value."""
    return str(getattr(status, "value", status))


def _combined_ca_bundle(ca_file: str) -> str:
    """A PEM file with the public roots (certifi) and ``ca_file``, written once per CA content."""
    import certifi

    extra = Path(ca_file).read_bytes()
    digest = hashlib.sha256(extra).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"edge-training-ca-{digest}.pem"
    if not target.exists():
        # A temporary name of this process and thread: threads sharing one hook may all write it at once.
        tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + extra)
        tmp.replace(target)
    return str(target)


def _version_key(model: Any) -> tuple[int, str]:
    version = str(getattr(model, "version", "") or "")
    return (int(version), version) if version.isdigit() else (-1, version)
