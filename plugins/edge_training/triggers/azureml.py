"""AzureMLJobTrigger: wait for an AML job in the triggerer, streaming its log into the task log.

Its events are in the package's one event vocabulary (:mod:`edge_training.triggers.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
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


def connection_fingerprint(connection: Any) -> str:
    """A digest of every setting of an Airflow connection (secret included, never shown): two triggers
    share a client only when their connection is the same, so an edited connection gets a new one."""
    fields = {name: getattr(connection, name, None) for name in ("conn_type", "host", "schema", "login",
                                                                  "password", "port")}
    fields["extra"] = getattr(connection, "extra_dejson", None) or getattr(connection, "extra", None)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


class SharedHooks:
    """The AML hooks the triggers of one event loop share: one per connection id and its settings.

    A triggerer runs hundreds of triggers in one event loop; with a hook each, every trigger would
    hold its own MLClient (a dozen generated service clients with their HTTP sessions), its own
    credential and token, and its own log transport. Sharing one hook per connection keeps the
    triggerer's memory and its token requests flat in the number of waits; the hook builds its
    clients once, under a lock, and its calls run side by side in worker threads. The hook is
    counted by its users and closed when the last one lets go, so nothing outlives the waits (and a
    connection edited meanwhile gets a new hook for the triggers that start after the edit).

    Only the event loop's own thread calls ``acquire``/``release`` (no await inside), so the count
    needs no lock.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, list[Any]] = {}

    def acquire(self, key: Hashable, build: Callable[[], AzureMLHook]) -> AzureMLHook:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = [build(), 0]
        entry[1] += 1
        return entry[0]

    def release(self, key: Hashable) -> AzureMLHook | None:
        """One user fewer; returns the hook to close when that was the last user."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry[1] -= 1
        if entry[1] > 0:
            return None
        del self._entries[key]
        return entry[0]

    def users(self, key: Hashable) -> int:
        entry = self._entries.get(key)
        return entry[1] if entry else 0

    def __len__(self) -> int:
        return len(self._entries)


#: The hooks this process's triggers share (keyed by event loop, connection id and settings).
SHARED_HOOKS = SharedHooks()


class AzureMLJobTrigger(BaseTrigger):
    """Poll one AML job until it ends, its deadline passes, or the user kills the task.

    Events: ``success`` (the job Completed), ``failed`` (it ended otherwise), ``timeout`` (the
    deadline passed; ``canceled`` says whether the job was stopped) or ``error``, each with the
    job's last seen AML status as ``job_status`` (see :mod:`edge_training.triggers.events`).

    azure-ai-ml is synchronous, so each SDK call runs in a worker thread (``asyncio.to_thread``)
    and the event loop never blocks. Calling the async azure-core pipeline directly would mean
    re-implementing the SDK's REST shapes, API versions and cloud handling, and the production
    path is the real SDK; the calls are short (one GET each poll), so a thread per call is cheap.

    The triggers of one connection share one hook (:class:`SharedHooks`). What one wait costs AML
    once its job is quiet: a status call every ``max_s`` and a log read (one HTTP Range request on
    the log's URL, which run history is asked for once) that backs off to every ``log_quiet_max_s``
    while the log does not grow (see ``PollPolicy``).

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
        # Not serialised: where the log is (run history's SAS URL, asked for once and again only
        # when it stops working) and when it is due to be read again.
        self._log_source: tuple[str | None, str] | None = None
        self._log_wait = 0.0
        self._log_due = 0.0

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

    async def _connection(self) -> Any:
        return await BaseHook.aget_connection(self.azureml_conn_id)

    def _new_hook(self, connection: Any) -> AzureMLHook:
        # retry_total=0: azure-core's own retries would hide 429/503 from this loop's backoff.
        return AzureMLHook(azureml_conn_id=self.azureml_conn_id, retry_total=0, connection=connection)

    @contextlib.asynccontextmanager
    async def _shared_hook(self) -> AsyncIterator[AzureMLHook]:
        """The hook of this trigger's connection, shared with the other triggers of this event loop."""
        connection = await self._connection()
        key = (asyncio.get_running_loop(), self.azureml_conn_id, connection_fingerprint(connection))
        hook = SHARED_HOOKS.acquire(key, lambda: self._new_hook(connection))
        try:
            yield hook
        finally:
            last_user_of = SHARED_HOOKS.release(key)
            if last_user_of is not None:
                await self._call(last_user_of.close)

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

    def _log_is_due(self) -> bool:
        return time.monotonic() >= self._log_due

    def _log_read(self, policy: PollPolicy, *, grew: bool) -> None:
        """After a read: read again at the next poll while the log grows, less and less often while quiet."""
        self._log_wait = policy.log_wait(self._log_wait, grew)
        self._log_due = time.monotonic() + self._log_wait

    async def _stream_log(self, hook: AzureMLHook, *, final: bool) -> None:
        """Show new log lines; a log that cannot be read is reported, never fatal to the wait.

        Run history is asked for the log's URL once; then each read is one Range request on it from
        the shown offset. A read that fails drops the URL (it may have expired), so the next read asks
        run history again.
        """
        policy = PollPolicy(**self.poll_policy)
        try:
            if self._log_source is None:
                log_file, url = await self._call(hook.log_url, self.job_name)
                if url is None:  # no log yet
                    self._log_read(policy, grew=False)
                    return
                self._log_source = (log_file, url)
            log_file, url = self._log_source
            chunk = await self._call(
                hook.read_log_at, self.job_name, url, self.log_offset, final=final, log_file=log_file
            )
        except Exception as err:  # noqa: BLE001 - e.g. an expired log URL (403): the wait goes on without it
            self._log_source = None
            self._log_read(policy, grew=False)
            self.log.warning("Could not read the log of AML job %s this time: %s", self.job_name, err)
            return
        self._log_read(policy, grew=chunk.new_bytes > 0)
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
        async with self._shared_hook() as hook:
            event = await self._wait(hook, policy)
        yield event

    async def _wait(self, hook: AzureMLHook, policy: PollPolicy) -> TriggerEvent:
        """Poll until the job ends, the deadline passes or the wait cannot go on: the one event to send."""
        job: JobState | None = None
        if self.stream_logs:
            # A triggerer that crashed mid-wait has already shown the log up to the stored offset.
            self.log_offset = max(self.log_offset, await self._stored_log_offset())
        while True:
            poll_started = time.monotonic()
            try:
                job = await self._with_retries(hook, lambda: self._call(hook.get_job, self.job_name))
            except TRANSIENT_ERRORS as err:
                if self.deadline is not None and time.time() >= self.deadline:
                    return await self._timeout(hook, job)
                return self._event(
                    EVENT_ERROR, job, f"AML job {self.job_name}: gave up after transient errors: {err}"
                )
            except Exception as err:
                return self._event(EVENT_ERROR, job, f"AML job {self.job_name}: {type(err).__name__}: {err}")
            log_due = job.is_terminal or (job.status in LOGGING_STATUSES and self._log_is_due())
            if self.stream_logs and log_due:
                await self._stream_log(hook, final=job.is_terminal)
            if job.is_terminal:
                outcome = EVENT_SUCCESS if job.succeeded else EVENT_FAILED
                return self._event(outcome, job, f"AML job {self.job_name} ended {job.status}")
            now = time.time()
            if self.deadline is not None and now >= self.deadline:
                return await self._timeout(hook, job)
            # The interval runs from one status call to the next (the log read is inside it), so
            # at the cap a job is seen exactly every max_s seconds.
            delay = policy.interval(self.polls_done, random.random()) - (time.monotonic() - poll_started)
            delay = max(delay, 0.0)
            if self.deadline is not None:
                delay = min(delay, max(0.0, self.deadline - now))
            self.polls_done += 1
            await asyncio.sleep(delay)

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
        async with self._shared_hook() as hook:
            # Inside the triggerer's own bound ([triggerer] on_kill_timeout, 30 s by default); the cancel
            # request goes out first, the rest only waits for AML to confirm it.
            job = await asyncio.wait_for(
                self._with_retries(hook, lambda: self._call(hook.cancel_job, self.job_name, wait_s=10.0)),
                timeout=25.0,
            )
            self.log.info("Canceled AML job %s on task kill; status %s", self.job_name, job.status)


async def first_event(trigger: BaseTrigger) -> TriggerEvent:
    """Run a trigger to its first event (the non-deferrable operator and the sensor's poke mode use it)."""
    agen = trigger.run()
    try:
        return await agen.__anext__()
    finally:
        await agen.aclose()
