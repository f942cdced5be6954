"""Azure Stack Hub blob storage: the hook (partition completeness, shape) and its manifest writer.

Stack Hub speaks blob REST API versions up to 2019-07-07, so every client is built with that
``api_version`` and a connection string with ``EndpointSuffix`` (shared key; SDK-made SAS tokens
carry a newer ``sv`` and fail there). The data must stay on premises: before any request, the
account endpoint is checked against the configured Stack Hub domain and public Azure suffixes are
refused unless the policy says otherwise (the policy itself is :mod:`.stackhub_locality`).

Partitions can hold tens of thousands of blobs. :meth:`StackHubBlobHook.validate_partition` makes
one pass over the listing (already sorted by name), hashing each entry as it goes (the
fingerprint is :mod:`.stackhub_fingerprint`) and spooling the manifest's file list to a
temporary file, so memory stays flat whatever the blob count.

Which partition, and what makes it written and well-formed, is one :class:`PartitionSpec`: the operator
builds it, the hook's wait and validation and the trigger read it.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import fnmatch
import functools
import io
import json
import random
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import IO, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from edge_training.exceptions import (
    LocalityPolicyError,
    PartitionIncompleteError,
    PartitionMissingError,
    SchemaDriftError,
    StackHubAuthError,
    StackHubError,
)
from edge_training.hooks.azure_logging import client_logging_kwargs
from edge_training.hooks.stackhub_fingerprint import FINGERPRINT_VERSION, Fingerprint, json_string
from edge_training.hooks.stackhub_listing import MAX_PAGE_SIZE, BlobEntry, iter_blob_entries
from edge_training.hooks.stackhub_locality import check_locality
from edge_training.partitions import date_in_prefix, validate_prefix
from edge_training.partitions import partition_date as _partition_date
from edge_training.retry import backoff_delay
from edge_training.windows import combine_window

DEFAULT_API_VERSION = "2019-07-07"
DEFAULT_DATASTORE = "stackhub_data"
DEFAULT_MANIFEST_NAME = "_manifest.json"
#: Writes of one manifest tried when a concurrent writer's commit discards this one's staged blocks.
MANIFEST_WRITE_ATTEMPTS = 3
#: Storage error codes that mean the account refused the shared key (a retry cannot fix that).
AUTH_ERROR_CODES = frozenset({"AuthorizationFailure", "AuthenticationFailed", "AuthorizationPermissionMismatch"})
DEFAULT_MARKER = "_SUCCESS"
DEFAULT_DATA_PATTERN = "part-*.csv"
HEADER_BYTES = 1024
#: Sampled headers read at once (ranged GETs of HEADER_BYTES each).
HEADER_READS_AT_ONCE = 8
_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")
# Blob names listed in a failure message are capped, so a bad 20,000-file partition stays readable.
_MAX_NAMED = 20


# ---------------------------------------------------------------------------------------------
# Header / schema (pure)
# ---------------------------------------------------------------------------------------------
def parse_header(head: bytes, *, blob_size: int, name: str) -> list[str]:
    """Return the CSV columns in the first line of ``head`` (at most the first KiB of a file)."""
    text = head.decode("utf-8-sig", errors="replace")
    newline = text.find("\n")
    if newline < 0:
        if blob_size > len(head):
            raise SchemaDriftError(
                f"data file {name}: no end of header line within the first {len(head)} bytes: "
                "expected a CSV header shorter than 1 KiB"
            )
        line = text
    else:
        line = text[:newline]
    line = line.rstrip("\r")
    if not line.strip():
        raise SchemaDriftError(f"data file {name}: the header line is empty: expected CSV column names")
    return [c.strip() for c in next(csv.reader([line]))]


def compare_columns(name: str, found: list[str], expected: list[str]) -> str | None:
    """Describe how ``found`` differs from ``expected`` (missing, extra, duplicated), or None."""
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    dupes = sorted({c for c in found if found.count(c) > 1})
    if not (missing or extra or dupes):
        return None
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"extra {extra}")
    if dupes:
        parts.append(f"duplicated {dupes}")
    return f"{name}: " + ", ".join(parts)


class Reservoir:
    """A fixed-size, deterministic random sample of a stream (the header checks' file sample)."""

    def __init__(self, size: int, seed: str) -> None:
        self.size = max(0, size)
        self.items: list[Any] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


# ---------------------------------------------------------------------------------------------
# Connection settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackHubSettings:
    """What a client needs, read from the stackhub_blob connection's extra. Never logged."""

    connection_string: str = field(repr=False)
    api_version: str = DEFAULT_API_VERSION
    ca_bundle: str | None = None
    stack_hub_domain: str | None = None
    allow_public_endpoint: bool = False
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_extra(
        cls,
        conn_id: str,
        extra: dict[str, Any],
        *,
        stack_hub_domain: str | None = None,
        allow_public_endpoint: bool | None = None,
    ) -> StackHubSettings:
        conn_str = extra.get("connection_string")
        if not conn_str:
            raise StackHubError(
                f"connection {conn_id!r} has no 'connection_string' in its extra: expected a Stack Hub "
                "connection string with AccountName, AccountKey and EndpointSuffix"
            )
        allowed = extra.get("allowed_endpoint_hosts") or ()
        if isinstance(allowed, str):
            allowed = [h.strip() for h in allowed.split(",") if h.strip()]
        public = allow_public_endpoint
        if public is None:
            public = str(extra.get("allow_public_endpoint", "false")).lower() == "true"
        return cls(
            connection_string=conn_str,
            api_version=extra.get("api_version") or DEFAULT_API_VERSION,
            ca_bundle=extra.get("ca_bundle") or None,
            stack_hub_domain=stack_hub_domain or extra.get("stack_hub_domain") or None,
            allow_public_endpoint=bool(public),
            allowed_hosts=tuple(allowed),
        )

    def client_kwargs(self) -> dict[str, Any]:
        # azure-core logs every request and response at INFO; a 20,000-blob partition would flood the
        # task log, so the client's HTTP logging goes to the package's own logger (see azure_logging).
        kwargs: dict[str, Any] = {"api_version": self.api_version, **client_logging_kwargs()}
        if self.ca_bundle:
            kwargs["connection_verify"] = self.ca_bundle
        return kwargs

    def service_client(self):
        """A sync BlobServiceClient, after the locality policy accepted its endpoint."""
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.connection_string, **self.client_kwargs())
        self.check(client.url)
        return client

    def async_service_client(self):
        """An async BlobServiceClient (for triggers), after the locality policy accepted its endpoint."""
        from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

        client = AsyncBlobServiceClient.from_connection_string(self.connection_string, **self.client_kwargs())
        self.check(client.url)
        return client

    def check(self, url: str) -> str:
        return check_locality(
            url,
            stack_hub_domain=self.stack_hub_domain,
            allow_public_endpoint=self.allow_public_endpoint,
            allowed_hosts=self.allowed_hosts,
        )


#: What a refusal says about the day, most specific first.
FINDINGS: tuple[tuple[type[Exception], str], ...] = (
    (PartitionMissingError, "no data"),
    (PartitionIncompleteError, "incomplete"),
    (SchemaDriftError, "schema drift"),
    (LocalityPolicyError, "not local"),
    (StackHubError, "validation failed"),
)


def validation_finding(err: StackHubError) -> dict[str, str]:
    """``{"finding", "message"}`` for a refused partition: the kind of refusal and the error's first line."""
    finding = next(label for cls, label in FINDINGS if isinstance(err, cls))
    lines = str(err).strip().splitlines()
    return {"finding": finding, "message": lines[0] if lines else type(err).__name__}


def check_container_name(container: str) -> str:
    if not isinstance(container, str) or not _CONTAINER_RE.match(container):
        raise StackHubError(
            f"container name {container!r} is invalid: expected 3-63 lowercase letters, digits and single hyphens"
        )
    return container


def _is_data_file(rel: str, data_pattern: str) -> bool:
    """The one rule for a data file, by its name relative to the partition folder (not a folder itself)."""
    return bool(rel) and not rel.endswith("/") and fnmatch.fnmatchcase(rel, data_pattern)


def data_uri(prefix: str, datastore: str = DEFAULT_DATASTORE) -> str:
    """The ``azureml://`` URI a training job uses to read the partition through the AML datastore."""
    return f"azureml://datastores/{datastore}/paths/{validate_prefix(prefix)}"


@dataclass(frozen=True)
class PartitionSpec:
    """One partition and what makes it written, complete and well-formed.

    The operator builds it once from its rendered arguments; the hook's wait, readiness check and
    validation and the trigger all read it, so what "written" means is said in one place. JSON-safe
    through :meth:`to_dict`, so a trigger can carry it.
    """

    container: str
    prefix: str
    partition_key: str | None = None
    data_pattern: str = DEFAULT_DATA_PATTERN
    success_marker: str | None = DEFAULT_MARKER
    expected_columns: tuple[str, ...] | None = None
    header_sample_size: int = 20
    manifest_name: str | None = DEFAULT_MANIFEST_NAME
    datastore: str = DEFAULT_DATASTORE

    def checked(self) -> PartitionSpec:
        """The same spec with its prefix normalised; raises on an unsafe prefix or a bad container or manifest name."""
        check_container_name(self.container)
        if self.manifest_name is not None and ("/" in self.manifest_name or not self.manifest_name):
            raise StackHubError(f"manifest name {self.manifest_name!r} must be a plain file name")
        return replace(self, prefix=validate_prefix(self.prefix))

    def is_data_file(self, blob_name: str) -> bool:
        """Whether a blob under the prefix is one of the partition's data files."""
        return _is_data_file(blob_name[len(self.prefix) :], self.data_pattern)

    def awaited(self) -> str:
        """What a wait looks for, for messages: the marker, else a matching data file."""
        if self.success_marker:
            return f"the {self.success_marker} marker"
        return f"a data file matching {self.data_pattern!r}"

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["expected_columns"] = list(self.expected_columns) if self.expected_columns is not None else None
        return found

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PartitionSpec:
        columns = values.get("expected_columns")
        return cls(**{**values, "expected_columns": tuple(columns) if columns is not None else None})


@dataclass
class PartitionScan:
    """What one pass over a partition's listing found. ``spool`` holds the manifest's file list."""

    container: str
    prefix: str
    blob_count: int = 0
    marker_present: bool = False
    fingerprint: str = ""
    file_count: int = 0
    bytes: int = 0
    empty_files: list[str] = field(default_factory=list)
    empty_file_count: int = 0
    ignored_count: int = 0
    first_data_file: str | None = None
    sample: list[tuple[str, int]] = field(default_factory=list)
    spool: IO[str] | None = field(default=None, repr=False)

    def problems(self, *, success_marker: str | None, data_pattern: str) -> list[str]:
        where = f"partition {self.container}/{self.prefix}"
        if self.blob_count == 0:
            return [f"{where} does not exist: no blobs under the prefix"]
        found: list[str] = []
        if success_marker and not self.marker_present:
            found.append(f"{where} has no {success_marker} marker: expected {self.prefix}{success_marker}")
        if self.file_count == 0:
            found.append(
                f"{where} has no data file matching {data_pattern!r} ({self.blob_count} blob(s), "
                f"{self.ignored_count} not matching)"
            )
        if self.empty_file_count:
            more = self.empty_file_count - len(self.empty_files)
            names = ", ".join(self.empty_files) + (f" and {more} more" if more > 0 else "")
            found.append(f"{where} has {self.empty_file_count} zero-byte data file(s): {names}")
        return found


def manifest_entry(name: str, size: int, content_md5: bytes | None, etag: str | None) -> str:
    """One file of the manifest's list: ``json.dumps({"name", "size", "content_md5", "etag"})`` with compact
    separators, written out (the same text, without the encoder's set-up per entry of a large partition)."""
    md5 = json_string(base64.b64encode(bytes(content_md5)).decode()) if content_md5 else "null"
    return (f'{{"name":{json_string(name)},"size":{int(size)},"content_md5":{md5},'
            f'"etag":{json_string((etag or "").strip(chr(34)))}}}')


def _naming_refused_credentials(method):
    """Hook methods that talk to the account report a refused key as StackHubAuthError."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._refused_credentials_named():
            return method(self, *args, **kwargs)

    return wrapper


class StackHubBlobHook(BaseHook):
    """Azure Stack Hub blob storage through azure-storage-blob pinned to API version 2019-07-07.

    Connection (type ``wasb``) extra: ``connection_string`` (shared key, with EndpointSuffix),
    ``api_version`` (default 2019-07-07), ``ca_bundle`` (the Stack Hub's CA file, passed as
    ``connection_verify``), ``stack_hub_domain`` (``<region>.<fqdn>``), optional
    ``allowed_endpoint_hosts`` and ``allow_public_endpoint``.
    """

    conn_name_attr = "stackhub_conn_id"
    default_conn_name = "stackhub_blob"
    conn_type = "wasb"
    hook_name = "Azure Stack Hub Blob"

    def __init__(
        self,
        *,
        stackhub_conn_id: str = default_conn_name,
        stack_hub_domain: str | None = None,
        allow_public_endpoint: bool | None = None,
        results_per_page: int = MAX_PAGE_SIZE,
    ) -> None:
        super().__init__()
        self.stackhub_conn_id = stackhub_conn_id
        self.stack_hub_domain = stack_hub_domain
        self.allow_public_endpoint = allow_public_endpoint
        self.results_per_page = results_per_page
        self._settings: StackHubSettings | None = None
        self._client = None

    # -- connection -------------------------------------------------------------------------
    @property
    def settings(self) -> StackHubSettings:
        if self._settings is None:
            self._settings = self._settings_of(self.get_connection(self.stackhub_conn_id))
        return self._settings

    def _settings_of(self, conn: Any) -> StackHubSettings:
        return StackHubSettings.from_extra(
            self.stackhub_conn_id,
            conn.extra_dejson,
            stack_hub_domain=self.stack_hub_domain,
            allow_public_endpoint=self.allow_public_endpoint,
        )

    async def async_service_client(self):
        """An async BlobServiceClient for a trigger, which owns (and closes) it.

        The connection is read without blocking the event loop; the locality policy runs before the
        client is handed out, as for :meth:`get_conn`.
        """
        if self._settings is None:
            self._settings = self._settings_of(await self.aget_connection(self.stackhub_conn_id))
        return self._settings.async_service_client()

    def get_conn(self):
        """The BlobServiceClient; the locality policy runs before it is handed out."""
        if self._client is None:
            self._client = self.settings.service_client()
        return self._client

    def endpoint(self) -> tuple[str, int]:
        """(host, port) of the account's blob endpoint, e.g. for a TCP check from the edge VM."""
        parts = urlsplit(self.get_conn().url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

    def container_client(self, container: str):
        return self.get_conn().get_container_client(check_container_name(container))

    # -- partition readiness (for waiting) ----------------------------------------------------
    @_naming_refused_credentials
    def partition_ready(self, spec: PartitionSpec) -> bool:
        """True when the partition looks written: its marker exists, or (no marker) a data file does."""
        from azure.core.exceptions import ResourceNotFoundError

        spec = spec.checked()
        cc = self.container_client(spec.container)
        if spec.success_marker:
            try:
                cc.get_blob_client(spec.prefix + spec.success_marker).get_blob_properties()
                return True
            except ResourceNotFoundError:
                return False
        blobs = cc.list_blobs(name_starts_with=spec.prefix, results_per_page=self.results_per_page)
        return any(spec.is_data_file(blob.name) for blob in blobs)

    async def apartition_ready(self, client: Any, spec: PartitionSpec) -> bool:
        """:meth:`partition_ready` through an async BlobServiceClient (from :meth:`async_service_client`)."""
        from azure.core.exceptions import ResourceNotFoundError

        cc = client.get_container_client(spec.container)
        if spec.success_marker:
            try:
                await cc.get_blob_client(spec.prefix + spec.success_marker).get_blob_properties()
                return True
            except ResourceNotFoundError:
                return False
        async for blob in cc.list_blobs(name_starts_with=spec.prefix, results_per_page=self.results_per_page):
            if spec.is_data_file(blob.name):
                return True
        return False

    @_naming_refused_credentials
    def wait_for_partition(
        self, spec: PartitionSpec, *, timeout: float, poll_interval: float, max_poll_interval: float
    ) -> None:
        """Block until :meth:`partition_ready` or raise PartitionIncompleteError after ``timeout``.

        Looks are ``poll_interval`` apart at first, doubling up to ``max_poll_interval``
        (:func:`partition_poll_delay`), as the trigger's are.
        """
        spec = spec.checked()
        deadline = time.monotonic() + timeout
        attempt = 0
        while not self.partition_ready(spec):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PartitionIncompleteError(
                    f"partition {spec.container}/{spec.prefix} was not ready after {timeout:g}s: "
                    f"expected {spec.awaited()}"
                )
            time.sleep(min(partition_poll_delay(attempt, poll_interval, max_poll_interval), remaining))
            attempt += 1

    # -- one pass over the listing ------------------------------------------------------------
    def iter_listing(self, container: str, prefix: str) -> Iterator[BlobEntry]:
        """Name, size, Content-MD5 and ETag of each blob under ``prefix``, sorted by name, page by page
        (read from the List Blobs pages directly: :mod:`.stackhub_listing` says why)."""
        return iter_blob_entries(self.container_client(container), prefix, self.results_per_page)

    def scan_partition(
        self,
        *,
        container: str,
        prefix: str,
        data_pattern: str = DEFAULT_DATA_PATTERN,
        success_marker: str | None = DEFAULT_MARKER,
        manifest_name: str = DEFAULT_MANIFEST_NAME,
        header_sample_size: int = 20,
        spool_manifest: bool = True,
    ) -> PartitionScan:
        """One streaming pass: counts, marker, empty files, fingerprint, header sample, manifest spool."""
        prefix = validate_prefix(prefix)
        scan = PartitionScan(container=container, prefix=prefix)
        fp = Fingerprint()
        sample = Reservoir(max(0, header_sample_size - 1), seed=f"{container}/{prefix}")
        # The manifest's file list goes to a temp file (not memory): it grows with the blob count.
        spool = tempfile.TemporaryFile(mode="w+", encoding="utf-8") if spool_manifest else None
        spooled = 0
        try:
            for blob in self.iter_listing(container, prefix):
                rel = blob.name[len(prefix) :]
                if not rel or rel == manifest_name:
                    continue
                scan.blob_count += 1
                if success_marker and rel == success_marker:
                    scan.marker_present = True
                    continue
                if not _is_data_file(rel, data_pattern):
                    scan.ignored_count += 1
                    continue
                size, md5 = blob.size, blob.content_md5
                fp.add(rel, size, md5, blob.etag)
                if size == 0:
                    scan.empty_file_count += 1
                    if len(scan.empty_files) < _MAX_NAMED:
                        scan.empty_files.append(blob.name)
                    continue
                if scan.first_data_file is None:
                    scan.first_data_file = blob.name
                    scan.sample.append((blob.name, size))
                else:
                    sample.offer((blob.name, size))
                if spool is not None:
                    spool.write(("," if spooled else "") + manifest_entry(rel, size, md5, blob.etag))
                    spooled += 1
        except BaseException:
            if spool is not None:
                spool.close()
            raise
        scan.sample.extend(sample.items)
        scan.fingerprint = fp.hexdigest()
        scan.file_count = fp.count
        scan.bytes = fp.bytes
        scan.spool = spool
        return scan

    # -- shape ---------------------------------------------------------------------------------
    def read_header(self, container: str, name: str, size: int) -> list[str]:
        """Columns of a CSV data file, from a ranged read of its first KiB only."""
        length = min(HEADER_BYTES, size)
        head = self.container_client(container).download_blob(name, offset=0, length=length).readall()
        return parse_header(head, blob_size=size, name=name)

    def check_schema(
        self, *, container: str, files: list[tuple[str, int]], expected_columns: list[str] | None
    ) -> list[str]:
        """Check the header of each sampled file; return the reference columns or raise SchemaDriftError."""
        if not files:
            return list(expected_columns or [])
        # Each read is one small ranged GET: reading a few at once costs about one round trip per batch
        # rather than one per file. Results are compared in the sample's order, so the reference and the
        # error (the first failing file's) are what a serial pass gives. The client is made before the
        # threads share it.
        self.get_conn()
        with ThreadPoolExecutor(max_workers=min(HEADER_READS_AT_ONCE, len(files)),
                                thread_name_prefix="header-read") as pool:
            headers = list(pool.map(lambda file: self.read_header(container, *file), files))
        reference = list(expected_columns) if expected_columns else None
        drifts: list[str] = []
        for (name, _), cols in zip(files, headers):
            if reference is None:
                reference = cols
                continue
            diff = compare_columns(name, cols, reference)
            if diff:
                drifts.append(diff)
        if drifts:
            source = "the expected columns" if expected_columns else f"the header of {files[0][0]}"
            shown = drifts[:_MAX_NAMED]
            more = f" (and {len(drifts) - len(shown)} more)" if len(drifts) > len(shown) else ""
            raise SchemaDriftError(
                f"schema drift in {len(drifts)} of {len(files)} checked data file(s) against {source} "
                f"{reference}: " + "; ".join(shown) + more
            )
        return reference or []

    # -- manifest --------------------------------------------------------------------------------
    def write_manifest(
        self, *, container: str, prefix: str, manifest_name: str, head: dict, scan: PartitionScan, tail: dict
    ) -> str:
        """Write ``<prefix><manifest_name>`` on the Stack Hub account, streaming the spooled file list.

        The JSON is staged as blocks of at most 4 MiB and committed as one block list, so a
        manifest of 100,000 files is written without holding it in memory. Two runs of one partition
        (a manual run beside a backfill) may write it at once: a commit discards the blocks the other
        writer staged but has not committed, whose commit then fails with InvalidBlockList. That
        writer stages and commits again (the last commit wins; both describe the same listing).
        """
        from azure.core.exceptions import HttpResponseError

        name = prefix + manifest_name
        for attempt in range(1, MANIFEST_WRITE_ATTEMPTS + 1):
            try:
                self._write_manifest_once(container=container, name=name, head=head, scan=scan, tail=tail)
                return name
            except HttpResponseError as err:
                code = getattr(err, "error_code", None)
                if str(getattr(code, "value", code)) != "InvalidBlockList" or attempt == MANIFEST_WRITE_ATTEMPTS:
                    raise
                self.log.warning("Manifest %s was committed by another writer while this one staged its "
                                 "blocks; writing it again (attempt %d)", name, attempt + 1)
        return name

    def _write_manifest_once(self, *, container: str, name: str, head: dict, scan: PartitionScan,
                             tail: dict) -> None:
        from azure.storage.blob import BlobBlock, ContentSettings

        blob = self.container_client(container).get_blob_client(name)
        block_size = 4 << 20
        run = uuid.uuid4().hex[:16]
        blocks: list[BlobBlock] = []
        buffer = io.BytesIO()

        def flush() -> None:
            if buffer.tell() == 0:
                return
            block_id = f"{run}-{len(blocks):08d}"
            blob.stage_block(block_id, buffer.getvalue())
            blocks.append(BlobBlock(block_id=block_id))
            buffer.seek(0)
            buffer.truncate()

        def write(text: str) -> None:
            buffer.write(text.encode("utf-8"))
            if buffer.tell() >= block_size:
                flush()

        head_json = json.dumps(head, indent=None, separators=(",", ":"))
        write(head_json[:-1] + ',"files":[')
        if scan.spool is not None:
            scan.spool.seek(0)
            while chunk := scan.spool.read(1 << 18):
                write(chunk)
        write("]," + json.dumps(tail, separators=(",", ":"))[1:])
        flush()
        blob.commit_block_list(blocks, content_settings=ContentSettings(content_type="application/json"))

    # -- the whole validation --------------------------------------------------------------------
    @contextmanager
    def _refused_credentials_named(self) -> Iterator[None]:
        """Turn the account's refusal of the shared key into an error naming account and connection."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        try:
            yield
        except (ClientAuthenticationError, HttpResponseError) as err:
            status = getattr(err, "status_code", None)
            code = str(getattr(getattr(err, "error_code", None), "value", getattr(err, "error_code", None)) or "")
            if not isinstance(err, ClientAuthenticationError) and status != 403 and code not in AUTH_ERROR_CODES:
                raise
            raise StackHubAuthError(
                f"Stack Hub account {self.get_conn().url} (connection {self.stackhub_conn_id!r}) refused the "
                f"credentials: {status} {code or type(err).__name__}; expected the account's shared key as "
                "AccountKey in the connection string"
            ) from None

    @_naming_refused_credentials
    def validate_partition(self, spec: PartitionSpec) -> dict[str, Any]:
        """Completeness, shape, fingerprint and manifest of one partition; return the XCom summary."""
        spec = spec.checked()
        container, prefix = spec.container, spec.prefix
        scan = self.scan_partition(
            container=container,
            prefix=prefix,
            data_pattern=spec.data_pattern,
            success_marker=spec.success_marker,
            manifest_name=spec.manifest_name or "",
            header_sample_size=spec.header_sample_size,
            spool_manifest=spec.manifest_name is not None,
        )
        try:
            problems = scan.problems(success_marker=spec.success_marker, data_pattern=spec.data_pattern)
            if problems:
                missing = scan.blob_count == 0
                raise (PartitionMissingError if missing else PartitionIncompleteError)("; ".join(problems))
            expected_columns = list(spec.expected_columns) if spec.expected_columns else None
            columns = self.check_schema(container=container, files=scan.sample, expected_columns=expected_columns)
            if spec.partition_key not in (None, ""):
                pdate = _partition_date(spec.partition_key).isoformat()
            else:  # an already-rendered prefix: take the date from its date=YYYY-MM-DD segment, if any
                found = date_in_prefix(prefix)
                pdate = found.isoformat() if found else None
            host = urlsplit(self.get_conn().url).hostname
            summary = {
                "account_host": host,
                "container": container,
                "prefix": prefix,
                "file_count": scan.file_count,
                "bytes": scan.bytes,
                "fingerprint": scan.fingerprint,
                "data_uri": data_uri(prefix, spec.datastore),
                "partition_date": pdate,
                "manifest": None,
            }
            if spec.manifest_name is not None:
                head = {
                    "manifest_version": 1,
                    "account_host": host,
                    "container": container,
                    "prefix": prefix,
                    "partition_date": pdate,
                    "data_pattern": spec.data_pattern,
                    "success_marker": spec.success_marker,
                }
                tail = {
                    "file_count": scan.file_count,
                    "bytes": scan.bytes,
                    "fingerprint": {"algorithm": "sha256", "format": FINGERPRINT_VERSION, "value": scan.fingerprint},
                    "schema": {
                        "columns": columns,
                        "source": "expected_columns" if expected_columns else "first data file",
                        "checked_files": [name for name, _ in scan.sample],
                    },
                    "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "data_uri": summary["data_uri"],
                }
                summary["manifest"] = self.write_manifest(
                    container=container, prefix=prefix, manifest_name=spec.manifest_name, head=head, scan=scan,
                    tail=tail,
                )
            return summary
        finally:
            if scan.spool is not None:
                scan.spool.close()

    def validate_window(self, specs: list[PartitionSpec], *, own_day: str | None, min_days: int) -> dict[str, Any]:
        """Validate each day of a training window (oldest first) and combine them
        (:func:`edge_training.windows.combine_window`). A day with no data or an incomplete one is a gap,
        named in the log; the window fails when fewer than ``min_days`` days are usable. Each day that
        validates gets its manifest, as a one-day run would write it."""
        partitions: list[dict[str, Any]] = []
        gaps: list[dict[str, str]] = []
        for spec in specs:
            try:
                partitions.append(self.validate_partition(spec))
            except PartitionIncompleteError as err:  # also PartitionMissingError: the day has no data
                if len(specs) == 1:
                    raise  # a one-day window has no gap to train around: it fails as the day does
                gap = {"date": _partition_date(spec.partition_key).isoformat(), **validation_finding(err)}
                gaps.append(gap)
                self.log.warning("Training window ending %s: day %s is a gap (%s)", own_day, gap["date"],
                                 gap["message"])
        return combine_window(partitions, gaps, own_day=own_day, window_days=len(specs), min_days=min_days)

#: Up to this fraction of each pause of a partition wait is taken off at random, so waits started
#: together (a backfill) do not look together.
PARTITION_POLL_JITTER = 0.2


def partition_poll_delay(
    attempt: int, poll_interval: float, max_poll_interval: float, *, retry_after_s: float | None = None
) -> float:
    """Pause before the next look at a late partition, in the worker or the triggerer alike.

    The package's one backoff (:func:`edge_training.retry.backoff_delay`): ``poll_interval`` doubling
    up to ``max_poll_interval``, never sooner than a server's Retry-After.
    """
    return backoff_delay(
        attempt,
        base_s=poll_interval,
        cap_s=max_poll_interval,
        rand=random.random(),
        jitter=PARTITION_POLL_JITTER,
        retry_after_s=retry_after_s,
    )
