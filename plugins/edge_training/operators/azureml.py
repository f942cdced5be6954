"""Azure ML operators: submit and wait for the training job, register the model (the quality gate is in gate.py)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, ResumableJobMixin
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

from edge_training.assets import emit_model_event, model_asset, partition_of
from edge_training.exceptions import (
    AzureMLError,
    AzureMLJobExistsError,
    AzureMLJobFailedError,
    AzureMLJobTimeoutError,
    ModelRegistrationError,
)
from edge_training.hooks.azureml import (
    DEFAULT_CONN_ID,
    FAILED_STATUSES,
    IN_PROGRESS_STATUSES,
    STATUS_COMPLETED,
    AzureMLHook,
    CommandJobSpec,
    JobState,
    job_output_uri,
)
from edge_training.hooks.azureml_naming import attempt_name, build_job_name, sanitize_job_name
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.links.azureml import AzureMLJobLink, AzureMLModelLink
from edge_training.operators.arguments import default_deferrable, flag, identifier, mapping
from edge_training.operators.arguments import seconds as seconds_argument
from edge_training.triggers.azureml import LOG_OFFSET_XCOM_KEY, AzureMLJobTrigger, first_event
from edge_training.triggers.events import EVENT_FAILED, EVENT_SUCCESS, EVENT_TIMEOUT

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Airflow's own deferral timeout fires this long after the trigger's deadline, as a backstop only.
DEFERRAL_GRACE_S = 120.0


_AML_BINDING = re.compile(r"\$\{\{\s*(?:inputs|outputs|search_space|parent)\.[^{}]*\}\}")


def protect_aml_bindings(text: str) -> str:
    """Keep AML's ``${{inputs.x}}`` / ``${{outputs.y}}`` placeholders away from Jinja.

    ``command`` is a template field, and Jinja would read ``{{inputs.data}}`` as its own variable
    and fail with "'inputs' is undefined". Each binding is wrapped in a raw block; a command that
    already manages its own ``{% raw %}`` blocks is left alone (raw blocks do not nest).
    """
    if not isinstance(text, str) or "{% raw %}" in text or "{%raw%}" in text:
        return text
    return _AML_BINDING.sub(lambda m: "{% raw %}" + m.group(0) + "{% endraw %}", text)


class AzureMLSubmitJobOperator(ResumableJobMixin, BaseOperator):
    """Run one AML command job for a partition and wait for it, without ever running two.

    The job name comes from the DAG, the partition and the data fingerprint. If a job of that name
    exists: running, attach; Completed, reuse its result; Failed/Canceled, submit ``<name>-a2``
    (then ``-a3``...). So a retry, a cleared task or a re-run backfill never duplicates a live job.
    The job actually followed is also kept in the task state store (Airflow 3.3
    ``ResumableJobMixin``), so a worker killed mid-wait resumes the same job on its retry.

    Deferrable (default: ``[operators] default_deferrable``): submit, check once, defer to
    ``AzureMLJobTrigger`` (which streams the job's log into this task's log) and finish in
    ``execute_complete``. With ``deferrable=False`` the same trigger loop runs in the worker.
    ``deferrable`` is templated (it must render as a bool), so a DAG can let each run choose (a
    deployment without a triggerer waits in the worker).

    Returns ``{job_name, status, studio_url, outputs: {name: uri}, duration_s}``.

    :param command: the job's command line; AML's ``${{inputs.x}}`` / ``${{outputs.y}}`` bindings are
        kept away from Jinja (templated).
    :param environment: AML environment the job runs in, ``name:version`` (templated).
    :param compute: AML compute target the job runs on (templated).
    :param partition: partition, for the job name and tags; None: the run's partition key (templated).
    :param data_fingerprint: the partition's data fingerprint (``StackHubPartitionOperator``'s
        ``fingerprint``), in the job name so that new data gets a new job; needed unless ``job_name``
        is given (templated).
    :param job_name: explicit job name (sanitised) instead of the derived one (templated).
    :param code: local folder uploaded as the job's code snapshot; None: no upload (templated).
    :param compute_kind: kind ``compute`` must be (``virtualmachine``, ``kubernetes``...), checked
        before submitting; None: not checked (templated).
    :param instance_type: AML instance type (Kubernetes compute); None: the compute's default (templated).
    :param inputs: job inputs by name: a URI (a ``uri_folder``) or a dict of ``azure.ai.ml.Input``
        arguments (templated).
    :param outputs: job outputs by name: None (a ``uri_folder`` AML places) or a dict of ``Output``
        arguments; default ``{"model": None}`` (templated).
    :param experiment_name: AML experiment the job is filed under (templated).
    :param display_name: name shown in AML studio; None: the job name (templated).
    :param description: the job's description (templated).
    :param tags: more job tags, over the lineage tags the operator sets (dag_id, task_id, run_id,
        partition, data_fingerprint) (templated).
    :param environment_variables: environment variables of the job (templated). With the OpenLineage
        provider installed and enabled, a new job also gets ``OPENLINEAGE_PARENT_ID`` and the like, naming
        this task's run (see ``edge_training.openlineage_facets.parent_run_env``); these win over them.
    :param azureml_conn_id: Airflow connection of the AML workspace.
    :param deferrable: wait in the triggerer, not the worker; None: ``[operators] default_deferrable``
        (templated, a bool).
    :param force_new_job: submit the next attempt even when a Completed job exists for this partition
        and data (templated, a bool).
    :param job_timeout: the job's time limit, in seconds or a timedelta, counted from the job's creation
        so that a retry does not extend it; past it the job is canceled and the task fails. None: no
        limit (templated, a number > 0).
    :param poll_policy: how often the job is polled and how errors back off; None: ``PollPolicy()``
        (every 5 s, growing to 15 s).
    :param stream_logs: copy the job's log into this task's log (a reused job's too).
    :param max_attempts: most job names (``<name>``, ``<name>-a2``...) tried before the task fails: a
        failed or canceled attempt's name is never reused.
    """

    template_fields: Sequence[str] = (
        "job_name",
        "partition",
        "data_fingerprint",
        "code",
        "command",
        "environment",
        "compute",
        "compute_kind",
        "instance_type",
        "inputs",
        "outputs",
        "experiment_name",
        "display_name",
        "description",
        "tags",
        "environment_variables",
        "force_new_job",
        "job_timeout",
        "deferrable",
    )
    template_fields_renderers = {"inputs": "json", "outputs": "json", "tags": "json", "environment_variables": "json"}
    operator_extra_links = (AzureMLJobLink(),)
    ui_color = "#cfe8fc"
    external_id_key = "azureml_job_name"

    def __init__(
        self,
        *,
        command: str,
        environment: str,
        compute: str,
        partition: str | None = None,
        data_fingerprint: str | None = None,
        job_name: str | None = None,
        code: str | None = None,
        compute_kind: str | None = None,
        instance_type: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        experiment_name: str | None = None,
        display_name: str | None = None,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        environment_variables: Mapping[str, Any] | None = None,
        azureml_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        force_new_job: bool = False,
        job_timeout: float | timedelta | None = None,
        poll_policy: PollPolicy | None = None,
        stream_logs: bool = True,
        max_attempts: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.command = protect_aml_bindings(command)
        self.environment = environment
        self.compute = compute
        self.partition = partition
        self.data_fingerprint = data_fingerprint
        self.job_name = job_name
        self.code = code
        self.compute_kind = compute_kind
        self.instance_type = instance_type
        # A mapping, or a task's output that renders to one (validate_partition's job_inputs).
        self.inputs = dict(inputs) if isinstance(inputs, Mapping) else (inputs or {})
        self.outputs = dict(outputs or {"model": None})
        self.experiment_name = experiment_name
        self.display_name = display_name
        self.description = description
        self.tags = dict(tags or {})
        self.environment_variables = dict(environment_variables or {})
        self.azureml_conn_id = azureml_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.force_new_job = force_new_job
        self.job_timeout = job_timeout
        self.poll_policy = poll_policy or PollPolicy()
        self.stream_logs = stream_logs
        self.max_attempts = max_attempts
        self._hook: AzureMLHook | None = None
        self._results: dict[str, dict[str, Any]] = {}
        self._live_job: str | None = None

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def hook(self) -> AzureMLHook:
        if self._hook is None:
            self._hook = AzureMLHook(azureml_conn_id=self.azureml_conn_id)
        return self._hook

    def _close_hook(self) -> None:
        if self._hook is not None:
            self._hook.close()
            self._hook = None

    def base_job_name(self, context: Context) -> str:
        """The explicit ``job_name``, else the name derived from DAG, partition and data fingerprint."""
        if self.job_name:
            return sanitize_job_name(self.job_name)
        partition = self.partition or partition_of(context)
        dag = context.get("dag")
        dag_id = dag.dag_id if dag is not None else self.dag_id
        return build_job_name(dag_id, str(partition or ""), str(self.data_fingerprint or ""))

    def _tags(self, context: Context) -> dict[str, str]:
        tags = {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": str(context.get("run_id", "")),
            "partition": str(self.partition or partition_of(context) or ""),
            "data_fingerprint": str(self.data_fingerprint or ""),
        }
        tags.update({str(k): str(v) for k, v in self.tags.items()})
        return tags

    def job_spec(self, context: Context) -> CommandJobSpec:
        """The rendered arguments as the job the hook submits (the job's name is the hook's other argument)."""
        return CommandJobSpec(
            command=self.command,
            environment=self.environment,
            compute=self.compute,
            code=self.code,
            instance_type=self.instance_type,
            inputs=mapping(self, "inputs", self.inputs),
            outputs=self.outputs,
            experiment_name=self.experiment_name,
            display_name=self.display_name,
            description=self.description,
            tags=self._tags(context),
            # The job's own lineage can name this task's run as its parent; the DAG's variables win.
            environment_variables={**self._openlineage_env(context), **self.environment_variables},
        )

    def _openlineage_env(self, context: Context) -> dict[str, str]:
        """OPENLINEAGE_PARENT_* variables naming this task's run, when the OpenLineage provider is installed
        and enabled for the task; nothing otherwise. Never fails the submission."""
        ti = context.get("ti")
        if ti is None:
            return {}
        try:
            from edge_training.openlineage_facets import parent_run_env
        except ImportError:
            return {}
        try:
            return parent_run_env(ti, self)
        except Exception as err:  # noqa: BLE001 - lineage must not cost a training
            self.log.warning("Could not build the OpenLineage parent identifiers for the AML job: %s", err)
            return {}

    def _job_deadline(self, job: JobState) -> float | None:
        """Job timeout counted from the job's creation, so a retry does not extend it."""
        seconds = seconds_argument(self, "job_timeout", self.job_timeout)
        if seconds is None:
            return None
        start = time.time()
        if job.created_at:
            created = datetime.fromisoformat(job.created_at.replace("Z", "+00:00"))
            if created.tzinfo is None:
                created = created.replace(tzinfo=timezone.utc)
            start = created.timestamp()
        return start + seconds

    def _task_deadline(self, context: Context) -> float | None:
        """When this try's ``execution_timeout`` runs out, in epoch seconds.

        Airflow 3.3 does not apply ``execution_timeout`` to the time a task spends deferred, nor call
        a trigger's ``on_kill`` when a deferral times out (apache/airflow#72030). So the limit travels
        into the trigger, which cancels the job itself when it passes.
        """
        if not self.execution_timeout:
            return None
        ti = context.get("ti")
        started = getattr(ti, "start_date", None)
        start = started.timestamp() if started else time.time()
        return start + self.execution_timeout.total_seconds()

    def _trigger(self, job: JobState, context: Context) -> AzureMLJobTrigger:
        job_deadline = self._job_deadline(job)
        task_deadline = self._task_deadline(context)
        deadlines = [d for d in (job_deadline, task_deadline) if d is not None]
        deadline = min(deadlines) if deadlines else None
        limit = None
        if deadline is not None:
            limit = "job_timeout" if deadline == job_deadline else "execution_timeout"
        return AzureMLJobTrigger(
            job_name=job.name,
            azureml_conn_id=self.azureml_conn_id,
            deadline=deadline,
            deadline_reason=limit,
            poll_policy=self.poll_policy.to_dict(),
            stream_logs=self.stream_logs,
        )

    def _log_finished_job(self, name: str) -> None:
        """Show a reused job's own log in this task's log, so a re-run is as readable as the first."""
        if not self.stream_logs:
            return
        try:
            chunk = self.hook.read_log(name, 0, final=True)
        except AzureMLError as exc:
            self.log.warning("Could not read the log of reused AML job %s: %s", name, exc)
            return
        for line in chunk.lines:
            self.log.info("[%s] %s", name, line)

    # -- ResumableJobMixin ------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any] | None:
        try:
            return self.execute_resumable(context)
        finally:
            self._close_hook()

    def submit_job(self, context: Context) -> str:
        """Find the attempt to follow, or submit one. Returns the AML job name."""
        base = self.base_job_name(context)
        force = flag(self, "force_new_job", self.force_new_job)
        if self.compute_kind:
            kind = self.hook.get_compute_kind(self.compute)
            if kind != self.compute_kind.lower():
                raise AzureMLError(
                    f"AML compute {self.compute!r}: expected kind {self.compute_kind!r}, found {kind!r}"
                )
        for attempt in range(1, self.max_attempts + 1):
            name = attempt_name(base, attempt)
            job = self.hook.find_job(name)
            if job is None:
                self.log.info("Submitting AML job %s (attempt %d) on compute %s", name, attempt, self.compute)
                try:
                    return self.hook.submit_command_job(name, self.job_spec(context)).name
                except AzureMLJobExistsError as err:
                    # Another run of the partition (a manual run beside a backfill) submitted this name
                    # since the look above, with its own run's tags and lineage identifiers: follow it.
                    job = self.hook.find_job(name)
                    if job is None:
                        raise
                    self.log.info("%s; another run submitted it meanwhile: following it", err)
            if job.status in IN_PROGRESS_STATUSES:
                self.log.info("AML job %s is already %s: attaching to it instead of submitting", name, job.status)
                return name
            if job.status == STATUS_COMPLETED and not force:
                self.log.info("AML job %s already Completed for this partition and data: reusing it", name)
                self._log_finished_job(name)
                return name
            self.log.info(
                "AML job %s ended %s; %s", name, job.status,
                "force_new_job is set, submitting the next attempt" if job.status == STATUS_COMPLETED
                else "submitting the next attempt",
            )
        raise AzureMLError(
            f"AML job {base!r}: all {self.max_attempts} attempts ({base} ... "
            f"{attempt_name(base, self.max_attempts)}) exist and none is running or reusable; "
            "raise max_attempts or set job_name"
        )

    def get_job_status(self, external_id: Any, context: Context) -> str:
        job = self.hook.find_job(str(external_id))
        return job.status if job else "NotFound"

    def is_job_active(self, status: str) -> bool:
        return status in IN_PROGRESS_STATUSES

    def is_job_succeeded(self, status: str) -> bool:
        return status == STATUS_COMPLETED and not flag(self, "force_new_job", self.force_new_job)

    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:
        """Check once, store the job link, then defer (or wait here when not deferrable)."""
        name = str(external_id)
        job = self.hook.get_job(name)
        AzureMLJobLink.persist(context, job.studio_url)
        if job.is_terminal:
            return self._finish(job.status, name, job.studio_url)
        trigger = self._trigger(job, context)
        self._live_job = name
        if flag(self, "deferrable", self.deferrable):
            self._close_hook()
            # The trigger keeps how much of the log it has shown here, so a triggerer crash repeats nothing.
            context["ti"].xcom_push(key=LOG_OFFSET_XCOM_KEY, value={"job_name": name, "offset": 0})
            self.log.info("Deferring: the triggerer follows AML job %s (%s)", name, job.status)
            # Airflow's own deferral timeout only backs the trigger's deadline up (a trigger that cannot
            # run at all); resume_execution then cancels the job from the worker.
            timeout = None
            if trigger.deadline is not None:
                timeout = timedelta(seconds=max(trigger.deadline - time.time(), 0) + DEFERRAL_GRACE_S)
            self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)
        self.log.info("Waiting in the worker for AML job %s (%s)", name, job.status)
        event = asyncio.run(first_event(trigger))
        return self._finish_event(event.payload)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        name = str(external_id)
        if name in self._results:
            return self._results[name]
        job = self.hook.get_job(name)
        AzureMLJobLink.persist(context, job.studio_url)
        return self._finish(job.status, name, job.studio_url)

    # -- completion -------------------------------------------------------------------------------
    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """On a deferral that Airflow itself timed out or failed, cancel the job before failing."""
        if next_method == TRIGGER_FAIL_REPR:
            store = context.get("task_state_store")
            name = store.get(self.external_id_key) if store is not None else None
            if name:
                self.log.warning("The deferral of AML job %s ended without an event; canceling the job", name)
                try:
                    self.hook.cancel_job(str(name))
                except AzureMLError as err:
                    self.log.error("Could not cancel AML job %s: %s", name, err)
                finally:
                    self._close_hook()
        return super().resume_execution(next_method, next_kwargs, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._finish_event(event)
        finally:
            self._close_hook()

    def _finish_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status == EVENT_TIMEOUT:
            self._live_job = None
            if event.get("deadline_reason") == "execution_timeout":
                limit = f"the task's execution_timeout {self.execution_timeout}"
            else:
                limit = f"job timeout {seconds_argument(self, 'job_timeout', self.job_timeout)} s"
            raise AzureMLJobTimeoutError(f"{event.get('message')} ({limit})")
        if status not in (EVENT_SUCCESS, EVENT_FAILED):
            raise AzureMLError(str(event.get("message")))
        return self._finish(str(event.get("job_status")), str(event.get("job_name")), event.get("studio_url"))

    def _finish(self, status: str, name: str, studio_url: str | None) -> dict[str, Any]:
        """Raise with the job's own error on a bad end; otherwise the small result dict."""
        self._live_job = None
        info = self.hook.get_run_info(name)
        if status != STATUS_COMPLETED:
            kind = "failed" if status in FAILED_STATUSES else f"ended {status}"
            raise AzureMLJobFailedError(
                f"AML job {name} {kind} (status {status}, expected Completed): "
                f"{info.error or 'the job reported no error message; see its log'}"
                + (f" — {studio_url}" if studio_url else "")
            )
        result = {
            "job_name": name,
            "status": status,
            "studio_url": studio_url,
            "outputs": self.hook.list_outputs(name),
            "duration_s": info.duration_s,
        }
        self._results[name] = result
        return result

    def on_kill(self) -> None:
        """Sync mode: the task was killed while waiting in the worker; cancel the job it follows."""
        if self._live_job:
            with AzureMLHook(azureml_conn_id=self.azureml_conn_id) as hook:
                hook.cancel_job(self._live_job)


# --- model registration --------------------------------------------------------------------------
#: What AzureMLRegisterModelOperator needs of ``training_data`` (StackHubPartitionOperator's result).
TRAINING_DATA_KEYS = ("account_host", "container", "prefix", "fingerprint")


class AzureMLRegisterModelOperator(BaseOperator):
    """Register a training job's model output as a version, once per job.

    Tags carry the lineage: partition, data fingerprint, job name, dag_id, run_id, git commit, the
    metrics (JSON) and the training environment. If a version tagged with this job name already
    exists it is returned instead of registering again, so a retry or re-run adds nothing.
    The model's asset (``model_asset(model_name)``, the default outlet) gets an event with the model,
    version and partition (and the run's partition key), so a deployment DAG can be scheduled on it;
    when the rendered ``model_name`` has no static outlet, an ``AssetAlias`` outlet carries the event.

    Returns ``{name, version, uri, workspace, job_name, studio_url, created}`` (``workspace``:
    ``azureml://subscriptions/<id>/resourcegroups/<group>/workspaces/<name>``). With the OpenLineage
    provider, the model version is the task's output dataset and ``training_data``, when given, its input.

    :param job_name: the Completed AML job whose output is registered (templated).
    :param model_name: AML model name; also names the default outlet (templated).
    :param partition: partition the model was trained on, for the tags (templated, text; an int is
        taken as its digits).
    :param data_fingerprint: fingerprint of the training data, for the tags (templated, text).
    :param git_commit: commit of the training code, for the tags (templated, text).
    :param training_environment: AML environment the job ran in, for the tags (templated, text).
    :param model_output: the job output holding the model (templated).
    :param metrics: the metrics to tag, as a dict (e.g. an upstream task's output); None: read
        ``metrics_file`` from ``model_output``. Only numbers go into the tag (templated).
    :param metrics_file: file name of the metrics JSON in ``model_output``.
    :param description: the model's description; None: names the job and the partition (templated).
    :param extra_tags: more tags, over the lineage tags (templated).
    :param training_data: the partition the model was trained on, as ``StackHubPartitionOperator`` returns
        it (e.g. its task's ``.output``): the input dataset of this task's OpenLineage events; None: no
        input is reported (templated, a dict).
    :param azureml_conn_id: Airflow connection of the AML workspace.
    """

    template_fields: Sequence[str] = (
        "job_name",
        "model_name",
        "partition",
        "data_fingerprint",
        "git_commit",
        "training_environment",
        "model_output",
        "description",
        "extra_tags",
        "metrics",
        "training_data",
    )
    template_fields_renderers = {"extra_tags": "json", "metrics": "json", "training_data": "json"}
    operator_extra_links = (AzureMLModelLink(),)
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        job_name: str,
        model_name: str,
        partition: str,
        data_fingerprint: str,
        git_commit: str,
        training_environment: str,
        model_output: str = "model",
        metrics: Mapping[str, Any] | None = None,
        metrics_file: str = "metrics.json",
        description: str | None = None,
        extra_tags: Mapping[str, Any] | None = None,
        training_data: Mapping[str, Any] | None = None,
        azureml_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.model_name = model_name
        self.training_data = training_data
        self.partition = partition
        self.data_fingerprint = data_fingerprint
        self.git_commit = git_commit
        self.training_environment = training_environment
        self.model_output = model_output
        self.metrics = metrics
        self.metrics_file = metrics_file
        self.description = description
        self.extra_tags = dict(extra_tags or {})
        self.azureml_conn_id = azureml_conn_id
        if not self.outlets and "{{" not in model_name:
            self.outlets = [model_asset(model_name)]

    def _metrics(self, hook: AzureMLHook) -> dict[str, Any]:
        if self.metrics is not None:
            return dict(mapping(self, "metrics", self.metrics))
        return hook.read_job_metrics(self.job_name, output_name=self.model_output, file_name=self.metrics_file)

    @staticmethod
    def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Numbers only (tags are short strings; the full metrics stay in the job output)."""
        return {k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and not isinstance(v, bool)}

    @cached_property
    def hook(self) -> AzureMLHook:
        return AzureMLHook(azureml_conn_id=self.azureml_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        if self.training_data is not None:
            self.training_data = mapping(self, "training_data", self.training_data, keys=TRAINING_DATA_KEYS)
        with self.hook as hook:
            job = hook.get_job(self.job_name)
            if job.status != STATUS_COMPLETED:
                raise ModelRegistrationError(
                    f"AML job {self.job_name}: expected status Completed before registering its "
                    f"{self.model_output!r} output as model {self.model_name!r}, found {job.status}"
                )
            for name in ("partition", "data_fingerprint", "git_commit", "training_environment"):
                setattr(self, name, identifier(self, name, getattr(self, name)))
            existing = hook.find_model_by_tag(self.model_name, "job_name", self.job_name)
            if existing is not None:
                self.log.info(
                    "Model %s version %s already holds job %s's output: returning it, registering nothing",
                    self.model_name, existing.version, self.job_name,
                )
                model, created = existing, False
            else:
                metrics = self._scalar_metrics(self._metrics(hook))
                tags = {
                    "partition": self.partition,
                    "data_fingerprint": self.data_fingerprint,
                    "job_name": self.job_name,
                    "dag_id": self.dag_id,
                    "run_id": str(context.get("run_id", "")),
                    "git_commit": self.git_commit,
                    "metrics": json.dumps(metrics, sort_keys=True, separators=(",", ":")),
                    "training_environment": self.training_environment,
                    **{str(k): str(v) for k, v in self.extra_tags.items()},
                }
                model = hook.register_model(
                    name=self.model_name,
                    path=job_output_uri(self.job_name, self.model_output),
                    tags=tags,
                    description=self.description
                    or f"Trained by AML job {self.job_name} on partition {self.partition}",
                )
                created = True
            studio_url = hook.model_studio_url(self.model_name, str(model.version))
            workspace = hook.workspace_uri()
        AzureMLModelLink.persist(context, studio_url)
        result = {
            "name": self.model_name,
            "version": str(model.version),
            "uri": f"azureml://models/{self.model_name}/versions/{model.version}",
            "workspace": workspace,
            "job_name": self.job_name,
            "studio_url": studio_url,
            "created": created,
        }
        self._emit_asset_events(context, result)
        self._result = result
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """For the OpenLineage provider: the model version out, the training partition in (when given)."""
        from edge_training.openlineage_facets import model_version_lineage

        result = getattr(self, "_result", None) or task_instance.xcom_pull(task_ids=self.task_id)
        return model_version_lineage(result, training_data=self.training_data)

    def _emit_asset_events(self, context: Context, result: Mapping[str, Any]) -> None:
        extra = {
            "model_name": result["name"],
            "model_version": result["version"],
            "model_uri": result["uri"],
            "job_name": result["job_name"],
            "partition": self.partition,
            "data_fingerprint": self.data_fingerprint,
            "created": result["created"],
        }
        emit_model_event(context, self.outlets, self.model_name, extra)
