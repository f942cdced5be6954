"""AzureMLJobTrigger: wait for an AML job in the triggerer, streaming its log into the task log.

Its events are in the package's one event vocabulary (:mod:`edge_training.triggers.events`).
"""

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
)
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.triggers.events import (
    EVENT_ERROR,
    EVENT_FAILED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    trigger_event,
)

#: The only errors the trigger waits out. Everything else ends the wait with an error event.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (AzureMLTransientError,)

#: The XCom key under which a deferred task keeps how much of its job's log it has shown.
LOG_OFFSET_XCOM_KEY = "azureml_log_offset"

#: Task states in which a killed task will not run again (so its job must stop).
TASK_ENDED_STATES = frozenset({"failed", "success", "skipped", "upstream_failed", "removed"})

T = TypeVar("T")


class AzureMLJobTrigger(BaseTrigger):
    """Poll one AML job until it ends, its deadline passes, or the user kills the task.

    Events: ``success`` (the job Completed), ``failed`` (it ended otherwise), ``timeout`` (the
    deadline passed; ``canceled`` says whether the job was stopped) or ``error``, each with the
    job's last seen AML status as ``job_status`` (see :mod:`edge_training.triggers.events`).

    azure-ai-ml is synchronous, so each SDK call runs in a worker thread (``asyncio.to_thread``)
    and the event loop never blocks. Calling the async azure-core pipeline directly would mean
    re-implementing the SDK's REST shapes, API versions and cloud handling, and the production
    path is the real SDK; the calls are short (one GET each poll), so a thread per call is cheap.

    :param job_name: the AML job to wait for.
    :param azureml_conn_id: the Airflow connection of the AML workspace.
    :param deadline: epoch seconds; past it the job is canceled (see ``cancel_on_timeout``) and a
        ``timeout`` event fires. None: no deadline.
    :param deadline_reason: which limit the deadline is (``job_timeout`` or ``execution_timeout``),
        passed back in the event so the task's error names it.
    :param poll_policy: ``PollPolicy`` fields as a dict (serialisable); None: ``PollPolicy()``.
    :param stream_logs: show the job's new log lines in the task log as they come.
    :param log_offset: byte offset in the job log to start showing from (0: the whole log). The
        offset reached is also kept durably, in this task instance's XCom (``LOG_OFFSET_XCOM_KEY``):
        a triggerer re-creates a trigger from the kwargs it was deferred with, so after a triggerer
        crash the new trigger resumes from the stored offset instead of showing the log again.
    :param polls_done: healthy polls already made, i.e. where on the polling ramp to start.
    :param max_transient_errors: consecutive transient errors tolerated before giving up.
    :param cancel_on_timeout: cancel the job when the deadline passes (else only report it).
    """

    def __init__(
        self,
        *,
        job_name: str,
        azureml_conn_id: str = DEFAULT_CONN_ID,
        deadline: float | None = None,
        deadline_reason: str | None = None,
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
        self.deadline_reason = deadline_reason
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
                "deadline_reason": self.deadline_reason,
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

    def _event(
        self, status: str, job: JobState | None, message: str, *, job_status: str | None = None, **extra: Any
    ) -> TriggerEvent:
        """An event about this job; ``job_status`` defaults to the status ``job`` was last seen in."""
        return trigger_event(
            status,
            message,
            job_name=self.job_name,
            job_status=job_status or (job.status if job else None),
            studio_url=job.studio_url if job else None,
            log_offset=self.log_offset,
            deadline_reason=self.deadline_reason,
            **extra,
        )

    async def _stream_log(self, hook: AzureMLHook, *, final: bool) -> None:
        """Show new log lines; a log that cannot be read is reported, never fatal to the wait."""
        try:
            chunk = await self._call(hook.read_log, self.job_name, self.log_offset, final=final)
        except Exception as err:  # noqa: BLE001 - e.g. an expired log URL (403): the wait goes on without it
            self.log.warning("Could not read the log of AML job %s this time: %s", self.job_name, err)
            return
        for line in chunk.lines:
            self.log.info("[%s] %s", self.job_name, line)
        if chunk.offset != self.log_offset:
            self.log_offset = chunk.offset
            await self._store_log_offset()

    def _xcom_scope(self) -> dict[str, Any] | None:
        """Where this trigger's task instance keeps XComs; None outside a triggerer (tests, worker)."""
        ti = self.task_instance
        if ti is None or not getattr(ti, "run_id", None):
            return None
        return {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id,
                "map_index": getattr(ti, "map_index", -1)}

    async def _stored_log_offset(self) -> int:
        scope = self._xcom_scope()
        if scope is None:
            return 0
        try:
            from airflow.sdk.execution_time.xcom import XCom

            stored = await XCom.aget_one(key=LOG_OFFSET_XCOM_KEY, **scope)
        except Exception as err:  # noqa: BLE001 - the wait matters more than the log position
            self.log.warning("Could not read the stored log offset of AML job %s: %s", self.job_name, err)
            return 0
        if isinstance(stored, dict) and stored.get("job_name") == self.job_name:
            return int(stored.get("offset") or 0)
        return 0

    async def _store_log_offset(self) -> None:
        scope = self._xcom_scope()
        if scope is None:
            return
        try:
            from airflow.sdk.execution_time.xcom import XCom

            await XCom.aset(LOG_OFFSET_XCOM_KEY, {"job_name": self.job_name, "offset": self.log_offset}, **scope)
        except Exception as err:  # noqa: BLE001 - at worst lines repeat after a triggerer crash
            self.log.warning("Could not store the log offset of AML job %s: %s", self.job_name, err)

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
        if self.stream_logs:
            # A triggerer that crashed mid-wait has already shown the log up to the stored offset.
            self.log_offset = max(self.log_offset, await self._stored_log_offset())
        try:
            while True:
                poll_started = time.monotonic()
                try:
                    job = await self._with_retries(hook, lambda: self._call(hook.get_job, self.job_name))
                except TRANSIENT_ERRORS as err:
                    if self.deadline is not None and time.time() >= self.deadline:
                        yield await self._timeout(hook, job)
                        return
                    yield self._event(
                        EVENT_ERROR, job, f"AML job {self.job_name}: gave up after transient errors: {err}"
                    )
                    return
                except Exception as err:
                    yield self._event(EVENT_ERROR, job, f"AML job {self.job_name}: {type(err).__name__}: {err}")
                    return
                if self.stream_logs and (job.status in LOGGING_STATUSES or job.is_terminal):
                    await self._stream_log(hook, final=job.is_terminal)
                if job.is_terminal:
                    outcome = EVENT_SUCCESS if job.succeeded else EVENT_FAILED
                    yield self._event(outcome, job, f"AML job {self.job_name} ended {job.status}")
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
                    job_status=final_status,
                    canceled=False,
                )
        return self._event(
            EVENT_TIMEOUT,
            job,
            f"AML job {self.job_name} passed its deadline"
            + (f" and was canceled (now {final_status})" if self.cancel_on_timeout else ""),
            job_status=final_status,
            canceled=self.cancel_on_timeout,
        )

    async def _task_will_run_again(self) -> bool:
        """Whether the user cleared the task (it runs again and re-attaches) rather than ending it.

        Airflow calls ``on_kill`` for a mark-failed, a mark-success and a clear alike. A cleared task
        finds the same running job by name, so canceling it would only waste the work done; a task
        marked failed or success will not come back, so its job must stop. Unknown means cancel.
        """
        scope = self._xcom_scope()
        if scope is None:
            return False
        try:
            from airflow.sdk.execution_time.comms import GetTaskStates
            from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

            result = await SUPERVISOR_COMMS.asend(GetTaskStates(
                dag_id=scope["dag_id"], task_ids=[scope["task_id"]], run_ids=[scope["run_id"]],
                map_index=scope["map_index"],
            ))
            states = (result.task_states or {}).get(scope["run_id"], {})
        except Exception as err:  # noqa: BLE001 - unknown: fall back to canceling
            self.log.warning("Could not read the state of the task following AML job %s: %s", self.job_name, err)
            return False
        if not states:  # no such task instance (its run was deleted): nothing will re-attach
            self.log.info("The task following AML job %s no longer exists", self.job_name)
            return False
        state = next(iter(states.values()), None)
        self.log.info("The task following AML job %s is now %s", self.job_name, state)
        return state not in TASK_ENDED_STATES

    async def on_kill(self) -> None:
        """The user marked the deferred task failed or success: cancel the AML job (not on a clear)."""
        if await self._task_will_run_again():
            self.log.info("The task was cleared and will re-attach to AML job %s: leaving it running", self.job_name)
            return
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
