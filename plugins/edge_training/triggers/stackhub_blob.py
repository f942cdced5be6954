"""Wait for a late Stack Hub partition without holding a worker slot.

The trigger polls with the async azure-storage-blob client (API 2019-07-07, same locality policy
as the sync hook), backs off with jitter, retries only transient transport/server errors and gives
up at an absolute deadline, so a triggerer restart resumes with the time already spent counted.
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from edge_training.hooks.stackhub_blob import (
    StackHubSettings,
    backoff_delay,
    check_container_name,
)
from edge_training.hooks.azureml_polling import TRANSIENT_HTTP_STATUSES
from edge_training.partitions import validate_prefix


class StackHubPartitionTrigger(BaseTrigger):
    """Fire when the partition's marker (or, with no marker, a matching data file) exists.

    Events: ``{"status": "ready", ...}``, ``{"status": "timeout", ...}`` or
    ``{"status": "error", "message": ...}`` for a non-transient failure (auth, locality, bad name).

    :param stackhub_conn_id: Stack Hub blob connection (type ``wasb``).
    :param container: blob container of the partition.
    :param prefix: the rendered partition folder (``telemetry/date=2026-11-10/``).
    :param success_marker: blob in the folder whose presence means ready; None: a blob matching
        ``data_pattern`` does.
    :param data_pattern: glob, relative to ``prefix``, of the data files (looked for without a marker).
    :param deadline: epoch seconds; past it a ``timeout`` event fires. Absolute, so a triggerer restart
        does not extend the wait.
    :param poll_interval: first pause between looks, in seconds; it doubles (with ±20% jitter) up to
        ``max_poll_interval``.
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
        container: str,
        prefix: str,
        success_marker: str | None,
        data_pattern: str,
        deadline: float,
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        stack_hub_domain: str | None = None,
        allow_public_endpoint: bool | None = None,
    ) -> None:
        super().__init__()
        self.stackhub_conn_id = stackhub_conn_id
        self.container = container
        self.prefix = prefix
        self.success_marker = success_marker
        self.data_pattern = data_pattern
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.stack_hub_domain = stack_hub_domain
        self.allow_public_endpoint = allow_public_endpoint

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "stackhub_conn_id": self.stackhub_conn_id,
                "container": self.container,
                "prefix": self.prefix,
                "success_marker": self.success_marker,
                "data_pattern": self.data_pattern,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "stack_hub_domain": self.stack_hub_domain,
                "allow_public_endpoint": self.allow_public_endpoint,
            },
        )

    def _where(self) -> str:
        return f"{self.container}/{self.prefix}"

    async def _ready(self, container_client) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        if self.success_marker:
            try:
                await container_client.get_blob_client(self.prefix + self.success_marker).get_blob_properties()
                return True
            except ResourceNotFoundError:
                return False
        async for blob in container_client.list_blobs(name_starts_with=self.prefix, results_per_page=1000):
            if fnmatch.fnmatchcase(blob.name[len(self.prefix) :], self.data_pattern):
                return True
        return False

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            prefix = validate_prefix(self.prefix)
            check_container_name(self.container)
            self.prefix = prefix
            conn = await BaseHook.aget_connection(self.stackhub_conn_id)
            settings = StackHubSettings.from_extra(
                self.stackhub_conn_id,
                conn.extra_dejson,
                stack_hub_domain=self.stack_hub_domain,
                allow_public_endpoint=self.allow_public_endpoint,
            )
            client = settings.async_service_client()
        except Exception as err:  # configuration errors will not fix themselves: report, do not poll
            yield TriggerEvent({"status": "error", "message": f"{type(err).__name__}: {err}", "prefix": self.prefix})
            return

        # The client is closed before the event is yielded, so a runner that drops the generator
        # after the first event leaves no open session behind.
        event = await self._poll(client)
        yield TriggerEvent(event)

    async def _poll(self, client) -> dict[str, Any]:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        attempt = 0
        last_error: str | None = None
        rng = random.Random()
        async with client:
            container_client = client.get_container_client(self.container)
            while True:
                try:
                    if await self._ready(container_client):
                        return {"status": "ready", "prefix": self.prefix, "container": self.container}
                    last_error = None
                except (ServiceRequestError, ServiceResponseError, asyncio.TimeoutError) as err:
                    last_error = f"{type(err).__name__}: {err}"
                    self.log.warning("Transient error polling %s, will retry: %s", self._where(), last_error)
                except HttpResponseError as err:
                    if err.status_code not in TRANSIENT_HTTP_STATUSES:
                        return {
                            "status": "error",
                            "prefix": self.prefix,
                            "message": f"HTTP {err.status_code} polling {self._where()}: {err.reason}",
                        }
                    last_error = f"HTTP {err.status_code}"
                    self.log.warning("Transient HTTP %s polling %s, will retry", err.status_code, self._where())
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    what = (
                        f"the {self.success_marker} marker"
                        if self.success_marker
                        else f"a data file matching {self.data_pattern!r}"
                    )
                    detail = f"; last error: {last_error}" if last_error else ""
                    return {
                        "status": "timeout",
                        "prefix": self.prefix,
                        "container": self.container,
                        "message": f"partition {self._where()} was not ready by the deadline: expected {what}{detail}",
                    }
                delay = backoff_delay(attempt, self.poll_interval, self.max_poll_interval, rng=rng)
                self.log.info("Partition %s not ready; next poll in %.1fs", self._where(), min(delay, remaining))
                await asyncio.sleep(min(delay, remaining))
                attempt += 1
