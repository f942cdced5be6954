"""Seed demo training partitions into the Stack Hub account (container `training`).

    python -m devstack.seed                      # the default range, DEFAULT_FROM..DEFAULT_TO
    python -m devstack.seed --date 2026-11-10    # one day
    python -m devstack.seed --from 2026-11-01 --to 2026-11-07 --rows 5000 --parts 4

Layout: ``telemetry/date=YYYY-MM-DD/part-00000.csv`` ... then ``_SUCCESS`` (written last, deleted
first). Data is deterministic per date (devstack.sample_data); a blob whose bytes are already there
(same Content-MD5) is skipped, so re-seeding is idempotent and cheap. Tests use
:func:`seed_partition` / :func:`delete_partition` to create or remove a partition on purpose.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
from dataclasses import dataclass, field

from devstack.sample_data import partition_files
from devstack.util import STACK_ENV_FILE, read_stack_env

API_VERSION = "2019-07-07"
CONTAINER = "training"
PREFIX = "telemetry"
DEFAULT_FROM = dt.date(2026, 11, 1)
DEFAULT_TO = dt.date(2026, 11, 30)
DEFAULT_ROWS = 2000
DEFAULT_PARTS = 4


@dataclass
class SeedResult:
    date: dt.date
    prefix: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rows: int = 0


def partition_prefix(date: dt.date, prefix: str = PREFIX) -> str:
    return f"{prefix}/date={date.isoformat()}/"


def _setting(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    values = read_stack_env()
    if not values.get(name):
        raise SystemExit(f"seed: {name} is not set and not in {STACK_ENV_FILE}; run `make stack-up` first")
    return values[name]


def _container_client(connection_string: str | None, ca_file: str | None, container: str):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(
        connection_string or _setting("EDGE_STACKHUB_CONNECTION_STRING"), api_version=API_VERSION,
        connection_verify=ca_file or _setting("EDGE_CA_FILE"),
    )
    return service.get_container_client(container)


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value[:10])


def seed_partition(date: dt.date | str, *, rows: int = DEFAULT_ROWS, parts: int = DEFAULT_PARTS,
                   connection_string: str | None = None, ca_file: str | None = None,
                   container: str = CONTAINER, prefix: str = PREFIX,
                   success_marker: bool = True) -> SeedResult:
    """Write one day's partition (parts, then ``_SUCCESS``); unchanged blobs are skipped."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContentSettings

    day = _as_date(date)
    client = _container_client(connection_string, ca_file, container)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    base = partition_prefix(day, prefix)
    existing = {b.name: (b.content_settings.content_md5, b.size)
                for b in client.list_blobs(name_starts_with=base)}
    files = partition_files(day, rows=rows, parts=parts)
    if not success_marker:
        files.pop("_SUCCESS")
    result = SeedResult(date=day, prefix=base, rows=rows)
    marker = f"{base}_SUCCESS"

    def unchanged(name: str, data: bytes) -> bool:
        have = existing.get(name)
        return (have is not None and have[1] == len(data) and have[0] is not None
                and bytes(have[0]) == hashlib.md5(data).digest())

    # Blobs left by an earlier seeding with more parts, and parts whose bytes differ.
    # The partition's manifest is written by the DAG's validation beside the data: not seed's to remove.
    stale = [n for n in existing if n[len(base):] not in files and not n.endswith("_manifest.json")]
    changed = [f for f, data in files.items() if f != "_SUCCESS" and not unchanged(base + f, data)]
    if (stale or changed) and marker in existing:
        # Unmark first: a reader must never see _SUCCESS over a partition being rewritten.
        client.delete_blob(marker)
        existing.pop(marker)
    for name in stale:
        if name in existing:
            client.delete_blob(name)
    for filename, data in files.items():  # _SUCCESS is last (dict order)
        name = base + filename
        if unchanged(name, data):
            result.skipped.append(name)
            continue
        content_type = "text/csv" if filename.endswith(".csv") else "application/octet-stream"
        client.upload_blob(name, data, overwrite=True, content_settings=ContentSettings(
            content_type=content_type, content_md5=hashlib.md5(data).digest()))
        result.uploaded.append(name)
    return result


def delete_partition(date: dt.date | str, *, connection_string: str | None = None,
                     ca_file: str | None = None, container: str = CONTAINER,
                     prefix: str = PREFIX) -> list[str]:
    """Remove a day's partition (``_SUCCESS`` first, so readers never see a marked, partial one)."""
    from azure.core.exceptions import ResourceNotFoundError

    client = _container_client(connection_string, ca_file, container)
    base = partition_prefix(_as_date(date), prefix)
    names = sorted((b.name for b in client.list_blobs(name_starts_with=base)),
                   key=lambda n: (not n.endswith("/_SUCCESS"), n))
    for name in names:
        try:
            client.delete_blob(name)
        except ResourceNotFoundError:
            pass
    return names


def list_partitions(*, connection_string: str | None = None, ca_file: str | None = None,
                    container: str = CONTAINER, prefix: str = PREFIX) -> list[dt.date]:
    """The days whose partition carries its ``_SUCCESS`` marker, oldest first."""
    client = _container_client(connection_string, ca_file, container)
    return sorted(
        dt.date.fromisoformat(blob.name[len(prefix) + len("/date="):].split("/", 1)[0])
        for blob in client.list_blobs(name_starts_with=f"{prefix}/date=")
        if blob.name.endswith("/_SUCCESS")
    )


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.seed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, default=DEFAULT_FROM)
    parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, default=DEFAULT_TO)
    parser.add_argument("--date", type=dt.date.fromisoformat, help="seed this one day only")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows per day")
    parser.add_argument("--parts", type=int, default=DEFAULT_PARTS, help="CSV part files per day")
    args = parser.parse_args(argv)
    days = [args.date] if args.date else date_range(args.start, args.end)
    uploaded = skipped = 0
    for day in days:
        res = seed_partition(day, rows=args.rows, parts=args.parts)
        uploaded += len(res.uploaded)
        skipped += len(res.skipped)
        state = "written" if res.uploaded else "unchanged"
        print(f"seed: {CONTAINER}/{res.prefix} {state} ({len(res.uploaded)} uploaded, "
              f"{len(res.skipped)} unchanged, {res.rows} rows)")
    print(f"seed: {len(days)} partition(s), {uploaded} blob(s) uploaded, {skipped} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
