"""Check a Stack Hub partition before any training job exists: local, complete, well-formed, fingerprinted."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from edge_training.exceptions import (
    InvalidPartitionKeyError,
    PartitionIncompleteError,
    StackHubError,
)
from edge_training.hooks.stackhub_blob import (
    DEFAULT_DATA_PATTERN,
    DEFAULT_DATASTORE,
    DEFAULT_MANIFEST_NAME,
    DEFAULT_MARKER,
    PartitionSpec,
    StackHubBlobHook,
    validation_finding,
)
from edge_training.operators.arguments import default_deferrable
from edge_training.partitions import partition_date, partition_date_str, partition_prefix
from edge_training.triggers.events import EVENT_SUCCESS, EVENT_TIMEOUT
from edge_training.windows import window_bounds, window_dates

#: XCom key under which a refused partition's finding is kept (the Edge training page flags the day).
VALIDATION_FINDING_KEY = "validation_finding"


class StackHubPartitionOperator(BaseOperator):
    """Validate one data partition on Azure Stack Hub blob storage and summarise it for training.

    ``prefix`` is a template for the partition folder: with ``{date}`` (``telemetry/date={date}/``)
    or a base folder (``telemetry/``, ``date=YYYY-MM-DD/`` is appended); ``partition_key`` is the
    run's key (``{{ dag_run.partition_key }}``), mapped to a date by :mod:`edge_training.partitions`.
    Without a key, ``prefix`` must be the rendered folder itself.

    With ``window_days`` N above 1 the run trains on the N daily partitions ending at its own
    (:mod:`edge_training.windows`): each day is validated, gaps are allowed down to ``min_days`` usable
    days and named in the log, and the fingerprint covers the days used.

    Returns ``{account_host, container, prefix, file_count, bytes, fingerprint, data_uri, partition_date,
    manifest}`` and the window's ``window_days, min_days, data_days, missing_days, gaps, partitions,
    job_inputs`` (the AML job inputs reading the days); each manifest JSON stays on the Stack Hub
    account, beside its day's data. With the OpenLineage
    provider, the partition is the task's input dataset (``edge_training.openlineage_facets``).
    ``partition_date`` comes from ``partition_key``, else from the prefix's ``date=YYYY-MM-DD`` segment.
    ``wasb_conn_id`` is an alias of ``stackhub_conn_id``.

    :param prefix: the partition folder's template or base folder, as above (templated).
    :param partition_key: the run's partition key (``CronPartitionTimetable`` key or ``YYYY-MM-DD``);
        None or empty: ``prefix`` is the rendered folder (templated).
    :param container: blob container holding the partitions (templated).
    :param stackhub_conn_id: Stack Hub blob connection (type ``wasb``); None: ``wasb_conn_id``, else
        ``stackhub_blob`` (templated).
    :param wasb_conn_id: alias of ``stackhub_conn_id``; both given and different is an error.
    :param data_pattern: glob, relative to the partition folder, of the data files; other blobs are
        ignored (templated).
    :param success_marker: blob in the folder that says the partition is complete; None or empty: no
        marker is required, and a wait looks for a data file instead (templated).
    :param expected_columns: CSV header every checked data file must have; None: the first data file's
        header is the reference (templated).
    :param header_sample_size: how many data files' headers are checked (the first file and a seeded
        sample of the others).
    :param manifest_name: file name of the manifest written into the partition folder; None or empty:
        no manifest (templated).
    :param datastore: AML datastore through which the returned ``data_uri`` reads the partition (templated).
    :param stack_hub_domain: ``<region>.<fqdn>`` the account's endpoint must be under; None: the
        connection's extra ``stack_hub_domain`` (templated).
    :param allow_public_endpoint: accept a public Azure cloud endpoint; None: the connection's extra,
        false unless set (the data stays on the Stack Hub).
    :param wait_for_partition: wait for a partition not yet written (its marker, else a data file)
        before validating; False: a missing partition fails the task at once.
    :param wait_timeout: seconds to wait for the partition with ``wait_for_partition``.
    :param poll_interval: first pause between looks while waiting, in seconds; it doubles (up to 20%
        taken off at random) up to ``max_poll_interval``.
    :param max_poll_interval: longest pause between looks while waiting, in seconds.
    :param window_days: how many days, ending at the run's own, the training reads; a wait
        (``wait_for_partition``) is for the run's own day, the earlier ones must be there (templated).
    :param min_days: how many of those days must be usable; None: all of them (templated).
    :param deferrable: wait in the triggerer (``StackHubPartitionTrigger``), not the worker; None:
        ``[operators] default_deferrable``. Only matters with ``wait_for_partition``.
    """

    template_fields: Sequence[str] = (
        "prefix",
        "partition_key",
        "container",
        "stackhub_conn_id",
        "data_pattern",
        "success_marker",
        "expected_columns",
        "manifest_name",
        "datastore",
        "stack_hub_domain",
        "window_days",
        "min_days",
    )
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        prefix: str,
        partition_key: str | None = None,
        container: str = "training",
        stackhub_conn_id: str | None = None,
        wasb_conn_id: str | None = None,
        data_pattern: str = DEFAULT_DATA_PATTERN,
        success_marker: str | None = DEFAULT_MARKER,
        expected_columns: list[str] | None = None,
        header_sample_size: int = 20,
        manifest_name: str | None = DEFAULT_MANIFEST_NAME,
        datastore: str = DEFAULT_DATASTORE,
        stack_hub_domain: str | None = None,
        allow_public_endpoint: bool | None = None,
        wait_for_partition: bool = False,
        wait_timeout: float = 3600.0,
        poll_interval: float = 60.0,
        max_poll_interval: float = 600.0,
        window_days: int = 1,
        min_days: int | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self.partition_key = partition_key
        self.container = container
        if stackhub_conn_id and wasb_conn_id and stackhub_conn_id != wasb_conn_id:
            raise StackHubError(
                f"stackhub_conn_id {stackhub_conn_id!r} and wasb_conn_id {wasb_conn_id!r} disagree: give one of them"
            )
        # wasb_conn_id is accepted as an alias: the connection has the Azure provider's wasb type.
        self.stackhub_conn_id = stackhub_conn_id or wasb_conn_id or StackHubBlobHook.default_conn_name
        self.data_pattern = data_pattern
        self.success_marker = success_marker
        self.expected_columns = expected_columns
        self.header_sample_size = header_sample_size
        self.manifest_name = manifest_name
        self.datastore = datastore
        self.stack_hub_domain = stack_hub_domain
        self.allow_public_endpoint = allow_public_endpoint
        self.wait_for_partition = wait_for_partition
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.window_days = window_days
        self.min_days = min_days
        self.deferrable = default_deferrable() if deferrable is None else deferrable

    @cached_property
    def hook(self) -> StackHubBlobHook:
        return StackHubBlobHook(
            stackhub_conn_id=self.stackhub_conn_id,
            stack_hub_domain=self.stack_hub_domain or None,
            allow_public_endpoint=self.allow_public_endpoint,
        )

    def partition_spec(self) -> PartitionSpec:
        """The rendered arguments as the one spec the hook and the trigger read."""
        key = None if self.partition_key in (None, "") else self.partition_key
        return PartitionSpec(
            container=self.container,
            prefix=partition_prefix(self.prefix, key),
            partition_key=key,
            data_pattern=self.data_pattern,
            success_marker=self.success_marker or None,
            expected_columns=tuple(self.expected_columns) if self.expected_columns else None,
            header_sample_size=int(self.header_sample_size),
            manifest_name=self.manifest_name or None,
            datastore=self.datastore,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        with self._finding_recorded(context):
            return self._execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._finding_recorded(context):
            return self._execute_complete(event)

    @contextlib.contextmanager
    def _finding_recorded(self, context: Any) -> Iterator[None]:
        """A refusal leaves its finding in XCom (VALIDATION_FINDING_KEY) before the task fails with it."""
        try:
            yield
        except StackHubError as err:
            ti = context.get("ti") if hasattr(context, "get") else None
            if ti is not None:
                try:
                    ti.xcom_push(key=VALIDATION_FINDING_KEY, value=validation_finding(err))
                except Exception as push_err:  # noqa: BLE001 - the refusal itself must reach the log
                    self.log.warning("Could not record the validation finding: %s", push_err)
            raise

    def _execute(self, context: Any) -> dict[str, Any]:
        self.window()  # bad window arguments are refused before any wait or request
        spec = self.partition_spec()
        hook = self.hook
        hook.get_conn()  # the locality policy runs here, before any request
        if self.wait_for_partition and not hook.partition_ready(spec):
            if self.deferrable:
                from edge_training.triggers.stackhub_blob import StackHubPartitionTrigger

                self.log.info(
                    "Partition %s/%s not ready; deferring for up to %ss", spec.container, spec.prefix, self.wait_timeout
                )
                self.defer(
                    trigger=StackHubPartitionTrigger(
                        stackhub_conn_id=self.stackhub_conn_id,
                        partition=spec,
                        deadline=time.time() + float(self.wait_timeout),
                        poll_interval=self.poll_interval,
                        max_poll_interval=self.max_poll_interval,
                        stack_hub_domain=hook.stack_hub_domain,
                        allow_public_endpoint=hook.allow_public_endpoint,
                    ),
                    method_name="execute_complete",
                    timeout=timedelta(seconds=float(self.wait_timeout) + 300),
                )
            hook.wait_for_partition(
                spec,
                timeout=float(self.wait_timeout),
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
            )
        return self._validate(hook, spec)

    def _execute_complete(self, event: dict[str, Any] | None) -> dict[str, Any]:
        event = event or {}
        status = event.get("status")
        if status == EVENT_SUCCESS:
            return self._validate(self.hook, self.partition_spec())
        if status == EVENT_TIMEOUT:
            raise PartitionIncompleteError(event.get("message") or "partition was not ready by the deadline")
        where = f"{event.get('container', self.container)}/{event.get('prefix')}"
        raise StackHubError(f"waiting for partition {where} failed: {event.get('message')}")

    def window(self) -> tuple[int, int]:
        """The rendered ``(window_days, min_days)``, checked."""
        return window_bounds(self.window_days, self.min_days)

    def window_specs(self, spec: PartitionSpec, window_days: int) -> list[PartitionSpec]:
        """The spec of each day of the window, oldest first; the last is the run's own ``spec``."""
        if window_days == 1:
            return [spec]
        if spec.partition_key is None:
            raise InvalidPartitionKeyError(
                f"window_days {window_days} needs the run's partition key to find its days; found prefix "
                f"{spec.prefix!r} and no key"
            )
        days = window_dates(partition_date(spec.partition_key), window_days)
        return [dataclasses.replace(spec, prefix=partition_prefix(self.prefix, day.isoformat()),
                                    partition_key=day.isoformat()) for day in days[:-1]] + [spec]

    def _validate(self, hook: StackHubBlobHook, spec: PartitionSpec) -> dict[str, Any]:
        window_days, min_days = self.window()
        own_day = partition_date_str(spec.partition_key) if spec.partition_key else None
        summary = hook.validate_window(self.window_specs(spec, window_days), own_day=own_day, min_days=min_days)
        self.log.info(
            "Partition %s/%s: %d data files, %d bytes, fingerprint %s; days %s%s",
            summary["container"],
            summary["prefix"],
            summary["file_count"],
            summary["bytes"],
            summary["fingerprint"],
            summary["data_days"] or "(from the prefix)",
            f"; gaps {summary['missing_days']}" if summary["missing_days"] else "",
        )
        self._summary = summary
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """For the OpenLineage provider: the validated partition, with its fingerprint, as the input."""
        from edge_training.openlineage_facets import partition_lineage

        summary = getattr(self, "_summary", None) or task_instance.xcom_pull(task_ids=self.task_id)
        return partition_lineage(summary)
