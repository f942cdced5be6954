"""AzureMLJobSensor: wait for an AML job submitted elsewhere, with the same trigger as the operator."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from edge_training.exceptions import AzureMLError, AzureMLJobFailedError, AzureMLJobTimeoutError
from edge_training.hooks.azureml import DEFAULT_CONN_ID, STATUS_COMPLETED, AzureMLHook
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.links.azureml import AzureMLJobLink
from edge_training.operators.arguments import default_deferrable
from edge_training.triggers.azureml import AzureMLJobTrigger, first_event
from edge_training.triggers.events import EVENT_FAILED, EVENT_SUCCESS, EVENT_TIMEOUT

if TYPE_CHECKING:
    from airflow.sdk import Context


class AzureMLJobSensor(BaseSensorOperator):
    """Succeed when the named AML job completes; fail with its own error when it fails or is canceled.

    Deferrable by default (the trigger streams the job's log into the task log). ``poke`` checks the
    status once, for reschedule/poke modes. ``timeout`` (the sensor's) bounds the wait; the job is
    not canceled by this sensor on timeout because it did not submit it (``cancel_on_timeout``).

    Returns ``{job_name, status, studio_url, outputs}``.

    :param job_name: the AML job to wait for (templated).
    :param azureml_conn_id: Airflow connection of the AML workspace.
    :param deferrable: wait in the triggerer; None: ``[operators] default_deferrable``, as the
        operators here. False: poke or reschedule like any sensor.
    :param poll_policy: how often the trigger polls the job; None: ``PollPolicy()``.
    :param stream_logs: copy the job's log into the task log while deferred.
    :param cancel_on_timeout: cancel the job when the sensor's ``timeout`` passes while deferred.
    """

    template_fields: Sequence[str] = ("job_name",)
    operator_extra_links = (AzureMLJobLink(),)

    def __init__(
        self,
        *,
        job_name: str,
        azureml_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poll_policy: PollPolicy | None = None,
        stream_logs: bool = True,
        cancel_on_timeout: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.azureml_conn_id = azureml_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_policy = poll_policy or PollPolicy()
        self.stream_logs = stream_logs
        self.cancel_on_timeout = cancel_on_timeout

    def _result(self, status: str, studio_url: str | None, hook: AzureMLHook) -> dict[str, Any]:
        if status != STATUS_COMPLETED:
            error = hook.get_run_info(self.job_name).error
            raise AzureMLJobFailedError(
                f"AML job {self.job_name} ended {status} (expected Completed): "
                f"{error or 'the job reported no error message; see its log'}"
            )
        return {
            "job_name": self.job_name,
            "status": status,
            "studio_url": studio_url,
            "outputs": hook.list_outputs(self.job_name),
        }

    def poke(self, context: Context) -> bool | Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        with self.hook as hook:
            job = hook.get_job(self.job_name)
            AzureMLJobLink.persist(context, job.studio_url)
            if not job.is_terminal:
                self.log.info("AML job %s is %s", self.job_name, job.status)
                return False
            return PokeReturnValue(is_done=True, xcom_value=self._result(job.status, job.studio_url, hook))

    def _trigger(self) -> AzureMLJobTrigger:
        deadline = None
        if self.timeout:
            import time

            deadline = time.time() + float(self.timeout)
        return AzureMLJobTrigger(
            job_name=self.job_name,
            azureml_conn_id=self.azureml_conn_id,
            deadline=deadline,
            poll_policy=self.poll_policy.to_dict(),
            stream_logs=self.stream_logs,
            cancel_on_timeout=self.cancel_on_timeout,
        )

    @cached_property
    def hook(self) -> AzureMLHook:
        return AzureMLHook(azureml_conn_id=self.azureml_conn_id)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        with self.hook as hook:
            job = hook.get_job(self.job_name)
            AzureMLJobLink.persist(context, job.studio_url)
            if job.is_terminal:
                return self._result(job.status, job.studio_url, hook)
        self.defer(trigger=self._trigger(), method_name="execute_complete")

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status == EVENT_TIMEOUT:
            raise AzureMLJobTimeoutError(str(event.get("message")))
        if status not in (EVENT_SUCCESS, EVENT_FAILED):
            raise AzureMLError(str(event.get("message")))
        with self.hook as hook:
            return self._result(str(event.get("job_status")), event.get("studio_url"), hook)

    def wait_inline(self, context: Context) -> dict[str, Any]:
        """Run the trigger in this process (tests, or callers without a triggerer) and finish."""
        event = asyncio.run(first_event(self._trigger()))
        return self.execute_complete(context, event.payload)
