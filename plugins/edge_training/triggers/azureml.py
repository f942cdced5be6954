"""AzureMLJobTrigger: wait for an AML job in the triggerer, streaming its log into the task log."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from airflow.sdk import BaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from edge_training.exceptions import AzureMLTransientError
from edge_training.hooks.azureml import (
    DEFAULT_CONN_ID,
    LOGGING_STATUSES,
    AzureMLHook,
    JobState,
    PollPolicy,
)

#: The only errors the trigger waits out. Everything else ends the wait with an error event.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (AzureMLTransientError,)

#: Event ``status`` values besides the AML job statuses.
EVENT_TIMEOUT = "Timeout"
EVENT_ERROR = "TriggerError"

T = TypeVar("T")


class AzureMLJobTrigger(BaseTrigger):
    """Poll one AML job until it ends, its deadline passes, or the user kills the task.

    azure-ai-ml is synchronous, so each SDK call runs in a worker thread (``asyncio.to_thread``)
    and the event loop never blocks. Calling the async azure-core pipeline directly would mean
    re-implementing the SDK's REST shapes, API versions and cloud handling, and the production
    path is the real SDK; the calls are short (one GET each poll), so a thread per call is cheap.

    :param job_name: the AML job to wait for.
    :param deadline: epoch seconds; past it the job is canceled and a ``Timeout`` event fires.
    :param poll_policy: ``PollPolicy`` fields as a dict (serialisable).
    :param log_offset: byte offset in the job log to start showing from (0: the whole log). The
        triggerer re-creates a trigger from the kwargs it was deferred with, so after a triggerer
        restart the log is shown again from this offset: repeated lines, never lost ones.
    :param polls_done: healthy polls already made, i.e. where on the polling ramp to start.
    :param max_transient_errors: consecutive transient errors tolerated before giving up.
    """

    def __init__(
        self,
        *,
        job_name: str,
        azureml_conn_id: str = DEFAULT_CONN_ID,
        deadline: float | None = None,
        poll_policy: dict[str, float] | None = None,
        stream_logs: bool = True,
        log_offset: int = 0,
        polls_done: int = 0,
        max_transient_errors: int = 30,
        cancel_on_timeout: bool = True,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.azureml_conn_id = azureml_conn_id
        self.deadline = deadline
        self.poll_policy = dict(poll_policy) if poll_policy else PollPolicy().to_dict()
        self.stream_logs = stream_logs
        self.log_offset = log_offset
        self.polls_done = polls_done
        self.max_transient_errors = max_transient_errors
        self.cancel_on_timeout = cancel_on_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "azureml_conn_id": self.azureml_conn_id,
                "deadline": self.deadline,
                "poll_policy": dict(self.poll_policy),
                "stream_logs": self.stream_logs,
                "log_offset": self.log_offset,
                "polls_done": self.polls_done,
                "max_transient_errors": self.max_transient_errors,
                "cancel_on_timeout": self.cancel_on_timeout,
            },
        )

    async def _hook(self) -> AzureMLHook:
        connection = await BaseHook.aget_connection(self.azureml_conn_id)
        # retry_total=0: azure-core's own retries would hide 429/503 from this loop's backoff.
        return AzureMLHook(azureml_conn_id=self.azureml_conn_id, retry_total=0, connection=connection)

    @staticmethod
    async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _event(self, status: str, job: JobState | None, message: str, **extra: Any) -> TriggerEvent:
        payload = {
            "status": status,
            "job_name": self.job_name,
            "studio_url": job.studio_url if job else None,
            "message": message,
            "log_offset": self.log_offset,
            **extra,
        }
        return TriggerEvent(payload)

    async def _stream_log(self, hook: AzureMLHook, *, final: bool) -> None:
        """Show new log lines; a log that cannot be read is reported, never fatal to the wait."""
        try:
            chunk = await self._call(hook.read_log, self.job_name, self.log_offset, final=final)
        except TRANSIENT_ERRORS as err:
            self.log.warning("Could not read the log of AML job %s this time: %s", self.job_name, err)
            return
        for line in chunk.lines:
            self.log.info("[%s] %s", self.job_name, line)
        self.log_offset = chunk.offset

    async def _with_retries(self, hook: AzureMLHook, what: Callable[[], Awaitable[T]]) -> T:
        """Run ``what``, waiting out TRANSIENT_ERRORS with capped, jittered backoff and Retry-After."""
        policy = PollPolicy(**self.poll_policy)
        errors = 0
        while True:
            try:
                return await what()
            except TRANSIENT_ERRORS as err:
                errors += 1
                if errors > self.max_transient_errors:
                    raise
                delay = policy.error_delay(errors, random.random(), getattr(err, "retry_after_s", None))
                if self.deadline is not None:
                    delay = max(0.0, min(delay, self.deadline - time.time()))
                self.log.warning(
                    "AML job %s: transient error %d/%d (%s); next try in %.1f s",
                    self.job_name,
                    errors,
                    self.max_transient_errors,
                    err,
                    delay,
                )
                await asyncio.sleep(delay)
                if self.deadline is not None and time.time() >= self.deadline:
                    raise

    async def run(self) -> AsyncIterator[TriggerEvent]:
        policy = PollPolicy(**self.poll_policy)
        hook = await self._hook()
        job: JobState | None = None
        try:
            while True:
                poll_started = time.monotonic()
                try:
                    job = await self._with_retries(hook, lambda: self._call(hook.get_job, self.job_name))
                except TRANSIENT_ERRORS as err:
                    if self.deadline is not None and time.time() >= self.deadline:
                        yield await self._timeout(hook, job)
                        return
                    yield self._event(EVENT_ERROR, job, f"AML job {self.job_name}: gave up after transient errors: {err}")
                    return
                except Exception as err:
                    yield self._event(EVENT_ERROR, job, f"AML job {self.job_name}: {type(err).__name__}: {err}")
                    return
                if self.stream_logs and (job.status in LOGGING_STATUSES or job.is_terminal):
                    await self._stream_log(hook, final=job.is_terminal)
                if job.is_terminal:
                    yield self._event(job.status, job, f"AML job {self.job_name} ended {job.status}")
                    return
                now = time.time()
                if self.deadline is not None and now >= self.deadline:
                    yield await self._timeout(hook, job)
                    return
                # The interval runs from one status call to the next (the log read is inside it), so
                # at the cap a job is seen exactly every max_s seconds.
                delay = policy.interval(self.polls_done, random.random()) - (time.monotonic() - poll_started)
                delay = max(delay, 0.0)
                if self.deadline is not None:
                    delay = min(delay, max(0.0, self.deadline - now))
                self.polls_done += 1
                await asyncio.sleep(delay)
        finally:
            await self._call(hook.close)

    async def _timeout(self, hook: AzureMLHook, job: JobState | None) -> TriggerEvent:
        """The deadline passed: cancel the job (unless told not to) and say what it ended as."""
        final_status = job.status if job else None
        if self.cancel_on_timeout:
            try:
                canceled = await self._with_retries(hook, lambda: self._call(hook.cancel_job, self.job_name))
                final_status = canceled.status
            except Exception as err:  # the timeout is still reported, with why the cancel failed
                return self._event(
                    EVENT_TIMEOUT,
                    job,
                    f"AML job {self.job_name} passed its deadline and the cancel failed: {err}",
                    final_status=final_status,
                    canceled=False,
                )
        return self._event(
            EVENT_TIMEOUT,
            job,
            f"AML job {self.job_name} passed its deadline"
            + (f" and was canceled (now {final_status})" if self.cancel_on_timeout else ""),
            final_status=final_status,
            canceled=self.cancel_on_timeout,
        )

    async def on_kill(self) -> None:
        """The user marked the deferred task failed/success or cleared it: cancel the AML job."""
        hook = await self._hook()
        try:
            # Inside the triggerer's own bound ([triggerer] on_kill_timeout, 30 s by default); the cancel
            # request goes out first, the rest only waits for AML to confirm it.
            job = await asyncio.wait_for(
                self._with_retries(hook, lambda: self._call(hook.cancel_job, self.job_name, wait_s=10.0)),
                timeout=25.0,
            )
            self.log.info("Canceled AML job %s on task kill; status %s", self.job_name, job.status)
        finally:
            await self._call(hook.close)


async def first_event(trigger: BaseTrigger) -> TriggerEvent:
    """Run a trigger to its first event (the non-deferrable operator and the sensor's poke mode use it)."""
    agen = trigger.run()
    try:
        return await agen.__anext__()
    finally:
        await agen.aclose()
