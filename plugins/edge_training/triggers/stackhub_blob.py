"""Wait for a late Stack Hub partition without holding a worker slot.

The trigger polls through the hook's async client (API 2019-07-07, same locality policy and the
same "written" rule as the sync wait), backs off with the package's one backoff, retries only
transient transport/server errors and gives up at an absolute deadline, so a triggerer restart
resumes with the time already spent counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from edge_training.hooks.stackhub_blob import PartitionSpec, StackHubBlobHook, partition_poll_delay
from edge_training.retry import TRANSIENT_HTTP_STATUSES, parse_retry_after
from edge_training.triggers.events import EVENT_ERROR, EVENT_SUCCESS, EVENT_TIMEOUT, trigger_event


class StackHubPartitionTrigger(BaseTrigger):
    """Fire when the partition's marker (or, with no marker, a matching data file) exists.

    Events (see :mod:`edge_training.triggers.events`), each with ``container`` and ``prefix``:
    ``success`` when the partition is written, ``timeout`` at the deadline, ``error`` for a
    non-transient failure (auth, locality, bad name).

    :param stackhub_conn_id: Stack Hub blob connection (type ``wasb``).
    :param partition: the partition and what makes it written, a ``PartitionSpec`` or its ``to_dict()``.
    :param deadline: epoch seconds; past it a ``timeout`` event fires. Absolute, so a triggerer restart
        does not extend the wait.
    :param poll_interval: first pause between looks, in seconds; it doubles (up to 20% taken off at
        random, never sooner than a Retry-After) up to ``max_poll_interval``.
    :param max_poll_interval: longest pause between looks, in seconds.
    :param stack_hub_domain: ``<region>.<fqdn>`` the account's endpoint must be under; None: the
        connection's extra ``stack_hub_domain``.
    :param allow_public_endpoint: accept a public Azure cloud endpoint; None: the connection's extra,
        false unless set.
    """

    def __init__(
        self,
        *,
        stackhub_conn_id: str,
        partition: PartitionSpec | Mapping[str, Any],
        deadline: float,
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        stack_hub_domain: str | None = None,
        allow_public_endpoint: bool | None = None,
    ) -> None:
        super().__init__()
        self.partition = partition if isinstance(partition, PartitionSpec) else PartitionSpec.from_dict(partition)
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.hook = StackHubBlobHook(
            stackhub_conn_id=stackhub_conn_id,
            stack_hub_domain=stack_hub_domain,
            allow_public_endpoint=allow_public_endpoint,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "stackhub_conn_id": self.hook.stackhub_conn_id,
                "partition": self.partition.to_dict(),
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "stack_hub_domain": self.hook.stack_hub_domain,
                "allow_public_endpoint": self.hook.allow_public_endpoint,
            },
        )

    def _event(self, status: str, message: str) -> TriggerEvent:
        return trigger_event(status, message, container=self.partition.container, prefix=self.partition.prefix)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            self.partition = self.partition.checked()
            client = await self.hook.async_service_client()
        except Exception as err:  # configuration errors will not fix themselves: report, do not poll
            yield self._event(EVENT_ERROR, f"{type(err).__name__}: {err}")
            return

        # The client is closed before the event is yielded, so a runner that drops the generator
        # after the first event leaves no open session behind.
        event = await self._poll(client)
        yield event

    async def _poll(self, client) -> TriggerEvent:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        where = f"{self.partition.container}/{self.partition.prefix}"
        attempt = 0
        last_error: str | None = None
        async with client:
            while True:
                retry_after_s = None
                try:
                    if await self.hook.apartition_ready(client, self.partition):
                        return self._event(EVENT_SUCCESS, f"partition {where} is written")
                    last_error = None
                except (ServiceRequestError, ServiceResponseError, asyncio.TimeoutError) as err:
                    last_error = f"{type(err).__name__}: {err}"
                    self.log.warning("Transient error polling %s, will retry: %s", where, last_error)
                except HttpResponseError as err:
                    if err.status_code not in TRANSIENT_HTTP_STATUSES:
                        return self._event(EVENT_ERROR, f"HTTP {err.status_code} polling {where}: {err.reason}")
                    last_error = f"HTTP {err.status_code}"
                    headers = getattr(err.response, "headers", None) or {}
                    retry_after_s = parse_retry_after(headers.get("Retry-After"))
                    self.log.warning("Transient HTTP %s polling %s, will retry", err.status_code, where)
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    detail = f"; last error: {last_error}" if last_error else ""
                    return self._event(
                        EVENT_TIMEOUT,
                        f"partition {where} was not ready by the deadline: expected {self.partition.awaited()}{detail}",
                    )
                delay = min(
                    partition_poll_delay(
                        attempt, self.poll_interval, self.max_poll_interval, retry_after_s=retry_after_s
                    ),
                    remaining,
                )
                self.log.info("Partition %s not ready; next poll in %.1fs", where, delay)
                await asyncio.sleep(delay)
                attempt += 1
