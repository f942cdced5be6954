"""StackHubPartitionOperator against the stack's Azurite (account edgedata, API 2019-07-07).

Each test writes its own partition under tests/stackhub/<case>/ so it does not depend on the seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from edge_training.exceptions import (
    InvalidPartitionKeyError,
    LocalityPolicyError,
    PartitionIncompleteError,
    SchemaDriftError,
    StackHubError,
)
from edge_training.hooks.stackhub_blob import PartitionSpec, StackHubBlobHook
from edge_training.hooks.stackhub_fingerprint import fingerprint_entries
from edge_training.operators.stackhub_blob import StackHubPartitionOperator
from edge_training.triggers.events import EVENT_ERROR, EVENT_SUCCESS, EVENT_TIMEOUT
from edge_training.triggers.stackhub_blob import StackHubPartitionTrigger

COLUMNS = ["device_id", "timestamp", "temperature_c", "vibration_mm_s", "pressure_kpa", "rpm", "runtime_hours", "failure"]
HEADER = ",".join(COLUMNS)
KEY = "2026-11-10T02:00:00"
BIG_COUNT = 20_000


def csv_body(rows: int, seed: int = 0, header: str = HEADER) -> bytes:
    lines = [header] + [f"dev-{seed}-{i},2026-11-10T00:{i % 60:02d}:00,21.5,0.3,101.2,1500,{i},0" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def container(stack_env):
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(
        stack_env["EDGE_STACKHUB_CONNECTION_STRING"],
        stack_env["EDGE_STACKHUB_CONTAINER"],
        api_version="2019-07-07",
        connection_verify=stack_env["EDGE_CA_FILE"],
    )
    if not client.exists():
        client.create_container()
    yield client
    client.close()


def write_partition(container, prefix: str, files: dict[str, bytes]) -> None:
    """Replace everything under ``prefix`` with ``files`` (relative name -> body)."""
    for blob in container.list_blobs(name_starts_with=prefix):
        container.delete_blob(blob.name)
    for name, body in files.items():
        container.upload_blob(prefix + name, body, overwrite=True)


def operator(prefix_template: str, **kwargs) -> StackHubPartitionOperator:
    kwargs.setdefault("partition_key", KEY)
    kwargs.setdefault("container", os.environ["EDGE_STACKHUB_CONTAINER"])
    return StackHubPartitionOperator(task_id="validate_partition", prefix=prefix_template, **kwargs)


def test_complete_partition_summary_fingerprint_and_manifest(container):
    prefix = "tests/stackhub/complete/date=2026-11-10/"
    files = {f"part-{i:05d}.csv": csv_body(20 + i, seed=i) for i in range(3)}
    write_partition(container, prefix, {**files, "_SUCCESS": b"", "notes.txt": b"not data"})

    summary = operator("tests/stackhub/complete/date={date}/", expected_columns=COLUMNS).execute({})

    expected_fp = fingerprint_entries(
        (name, len(body), hashlib.md5(body).digest(), None) for name, body in sorted(files.items())
    )[0]
    day = {
        "account_host": "edgedata.blob.local.azurestack.external",
        "container": "training",
        "prefix": prefix,
        "file_count": 3,
        "bytes": sum(len(b) for b in files.values()),
        "fingerprint": expected_fp,
        "data_uri": f"azureml://datastores/stackhub_data/paths/{prefix}",
        "partition_date": "2026-11-10",
        "manifest": prefix + "_manifest.json",
    }
    # A one-day window (the default): the day itself, read by the job as its `data` input.
    assert summary == {**day, "window_days": 1, "min_days": 1, "data_days": "2026-11-10", "missing_days": "",
                       "gaps": [], "partitions": [day], "job_inputs": {"data": {"type": "uri_folder",
                                                                                "path": day["data_uri"]}}}
    json.dumps(summary)

    manifest = json.loads(container.download_blob(prefix + "_manifest.json").readall())
    assert manifest["fingerprint"]["value"] == expected_fp
    assert [f["name"] for f in manifest["files"]] == sorted(files)
    assert [f["size"] for f in manifest["files"]] == [len(files[n]) for n in sorted(files)]
    assert manifest["schema"]["columns"] == COLUMNS
    assert manifest["account_host"] == "edgedata.blob.local.azurestack.external"
    assert "AccountKey" not in json.dumps(manifest)

    # Re-run: the manifest beside the data is not a data file and does not change the fingerprint;
    # re-uploading identical bytes (new ETag, same Content-MD5) keeps it too.
    container.upload_blob(prefix + "part-00001.csv", files["part-00001.csv"], overwrite=True)
    again = operator("tests/stackhub/complete/", expected_columns=COLUMNS).execute({})
    assert again["fingerprint"] == expected_fp and again["file_count"] == 3

    # Changing one data file changes the fingerprint.
    container.upload_blob(prefix + "part-00001.csv", csv_body(99, seed=1), overwrite=True)
    changed = operator("tests/stackhub/complete/").execute({})
    assert changed["fingerprint"] != expected_fp


def test_missing_partition(container):
    write_partition(container, "tests/stackhub/missing/date=2026-11-10/", {})
    with pytest.raises(PartitionIncompleteError, match=r"training/tests/stackhub/missing/date=2026-11-10/ does not exist"):
        operator("tests/stackhub/missing/").execute({})


def test_partition_without_marker_and_custom_marker(container):
    prefix = "tests/stackhub/nomarker/date=2026-11-10/"
    write_partition(container, prefix, {"part-00000.csv": csv_body(5), "_DONE": b""})
    with pytest.raises(PartitionIncompleteError, match=r"has no _SUCCESS marker: expected .*nomarker/date=2026-11-10/_SUCCESS"):
        operator("tests/stackhub/nomarker/").execute({})
    summary = operator("tests/stackhub/nomarker/", success_marker="_DONE").execute({})
    assert summary["file_count"] == 1


def test_partition_with_no_matching_data_file(container):
    prefix = "tests/stackhub/nodata/date=2026-11-10/"
    write_partition(container, prefix, {"readme.txt": b"x", "_SUCCESS": b""})
    with pytest.raises(PartitionIncompleteError, match=r"no data file matching 'part-\*\.csv' \(2 blob\(s\), 1 not matching\)"):
        operator("tests/stackhub/nodata/").execute({})


def test_partition_with_empty_file_names_it(container):
    prefix = "tests/stackhub/empty/date=2026-11-10/"
    write_partition(container, prefix, {"part-00000.csv": csv_body(5), "part-00001.csv": b"", "_SUCCESS": b""})
    with pytest.raises(PartitionIncompleteError, match=r"1 zero-byte data file\(s\): tests/stackhub/empty/date=2026-11-10/part-00001.csv"):
        operator("tests/stackhub/empty/").execute({})


def test_schema_drift_names_file_and_columns(container):
    prefix = "tests/stackhub/drift/date=2026-11-10/"
    drifted = ",".join([c for c in COLUMNS if c != "rpm"] + ["humidity"])
    write_partition(
        container,
        prefix,
        {"part-00000.csv": csv_body(5), "part-00001.csv": csv_body(5, header=drifted), "_SUCCESS": b""},
    )
    # Against the partition's own first file (no expected columns given) ...
    with pytest.raises(SchemaDriftError) as err:
        operator("tests/stackhub/drift/").execute({})
    assert "part-00001.csv: missing ['rpm'], extra ['humidity']" in str(err.value)
    # ... and against the expected columns: the first file is fine, the second drifted.
    with pytest.raises(SchemaDriftError, match=r"1 of 2 checked data file\(s\).*part-00001.csv: missing \['rpm'\], extra \['humidity'\]"):
        operator("tests/stackhub/drift/", expected_columns=COLUMNS).execute({})
    # A drift the first file carries is caught when the columns are expected.
    with pytest.raises(SchemaDriftError, match=r"part-00000.csv: missing \['label'\]"):
        operator("tests/stackhub/drift/", expected_columns=[*COLUMNS, "label"]).execute({})
    # No manifest is written for a partition that failed.
    assert not container.get_blob_client(prefix + "_manifest.json").exists()


def test_header_check_reads_only_the_first_kib(container):
    """A 3 MiB file is checked from a ranged read: the header is found, the body is never fetched."""
    prefix = "tests/stackhub/bigfile/date=2026-11-10/"
    body = csv_body(40_000)
    assert len(body) > 2 * 1024 * 1024
    write_partition(container, prefix, {"part-00000.csv": body, "_SUCCESS": b""})
    hook = StackHubBlobHook()
    assert hook.read_header("training", prefix + "part-00000.csv", len(body)) == COLUMNS
    summary = operator("tests/stackhub/bigfile/", expected_columns=COLUMNS).execute({})
    assert summary["bytes"] == len(body)


def test_public_endpoint_is_refused(monkeypatch, stack_env):
    public = stack_env["EDGE_STACKHUB_CONNECTION_STRING"].replace(
        "EndpointSuffix=local.azurestack.external:47101", "EndpointSuffix=core.windows.net"
    )
    assert "core.windows.net" in public
    extra = json.loads(stack_env["AIRFLOW_CONN_STACKHUB_BLOB"])["extra"]
    monkeypatch.setenv("AIRFLOW_CONN_PUBLIC_BLOB", json.dumps({"conn_type": "wasb", "extra": {**extra, "connection_string": public}}))
    with pytest.raises(LocalityPolicyError, match=r"edgedata\.blob\.core\.windows\.net is a public Azure cloud endpoint"):
        operator("telemetry/", stackhub_conn_id="public_blob").execute({})
    # A Stack Hub domain that does not match the account is refused too.
    with pytest.raises(LocalityPolicyError, match="outside the Stack Hub domain"):
        operator("telemetry/", stack_hub_domain="region2.azurestack.external").execute({})


@pytest.mark.parametrize(
    "template, key",
    [
        ("telemetry/", "../../2026-11-10"),
        ("telemetry/", "2026-11-10/../../x"),
        ("telemetry/", "%2e%2e%2f2026-11-10"),
        ("telemetry/", "2026-11-10%2f..%2f.."),
        ("telemetry/", "/etc/passwd"),
        ("telemetry/", "2026-11-10\r\n"),
        ("telemetry/", "..\\..\\2026-11-10"),
        ("../telemetry/date={date}/", KEY),
        ("/telemetry/date={date}/", KEY),
    ],
)
def test_traversal_keys_are_refused(container, template, key):
    with pytest.raises(InvalidPartitionKeyError):
        operator(template, partition_key=key).execute({})


def test_deferrable_wait_for_late_partition(container):
    prefix = "tests/stackhub/late/date=2026-11-10/"
    write_partition(container, prefix, {"part-00000.csv": csv_body(5)})  # data, but no marker yet
    op = operator("tests/stackhub/late/", wait_for_partition=True, deferrable=True, wait_timeout=30, poll_interval=0.5)
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, StackHubPartitionTrigger)
    path, kwargs = trigger.serialize()
    json.dumps(kwargs)  # only serialisable kwargs

    async def run_until_event():
        events = trigger.run()
        return await asyncio.wait_for(anext(events), timeout=30)

    writer = threading.Timer(1.5, lambda: container.upload_blob(prefix + "_SUCCESS", b"", overwrite=True))
    writer.start()
    started = time.monotonic()
    event = asyncio.run(run_until_event())
    writer.join()
    assert event.payload["status"] == EVENT_SUCCESS and time.monotonic() - started >= 1.0
    summary = op.execute_complete({}, event.payload)
    assert summary["file_count"] == 1 and summary["prefix"] == prefix


def test_deferred_wait_times_out(container):
    prefix = "tests/stackhub/never/date=2026-11-10/"
    write_partition(container, prefix, {})
    trigger = StackHubPartitionTrigger(
        stackhub_conn_id="stackhub_blob",
        partition=PartitionSpec(container="training", prefix=prefix),
        deadline=time.time() + 2,
        poll_interval=0.5,
    )

    async def first_event():
        return await asyncio.wait_for(anext(trigger.run()), timeout=20)

    event = asyncio.run(first_event())
    assert event.payload["status"] == EVENT_TIMEOUT
    assert "expected the _SUCCESS marker" in event.payload["message"]
    op = operator("tests/stackhub/never/")
    with pytest.raises(PartitionIncompleteError, match="not ready by the deadline"):
        op.execute_complete({}, event.payload)


def test_trigger_reports_auth_failure_without_polling(monkeypatch, stack_env):
    bad = stack_env["EDGE_STACKHUB_CONNECTION_STRING"]
    key = bad.split("AccountKey=")[1].split(";")[0]
    bad = bad.replace(key, "d3JvbmdrZXk=")
    extra = json.loads(stack_env["AIRFLOW_CONN_STACKHUB_BLOB"])["extra"]
    monkeypatch.setenv("AIRFLOW_CONN_BADKEY_BLOB", json.dumps({"conn_type": "wasb", "extra": {**extra, "connection_string": bad}}))
    trigger = StackHubPartitionTrigger(
        stackhub_conn_id="badkey_blob",
        partition=PartitionSpec(container="training", prefix="tests/stackhub/never/date=2026-11-10/"),
        deadline=time.time() + 60,
        poll_interval=5,
    )
    event = asyncio.run(asyncio.wait_for(anext(trigger.run()), timeout=20))
    assert event.payload["status"] == EVENT_ERROR and "HTTP 403" in event.payload["message"]
    with pytest.raises(StackHubError, match="HTTP 403"):
        operator("tests/stackhub/never/").execute_complete({}, event.payload)


def test_sync_wait_for_late_partition(container):
    prefix = "tests/stackhub/latesync/date=2026-11-10/"
    write_partition(container, prefix, {"part-00000.csv": csv_body(5)})
    writer = threading.Timer(1.0, lambda: container.upload_blob(prefix + "_SUCCESS", b"", overwrite=True))
    writer.start()
    summary = operator("tests/stackhub/latesync/", wait_for_partition=True, deferrable=False, wait_timeout=20, poll_interval=0.3).execute({})
    writer.join()
    assert summary["file_count"] == 1


BIG_PREFIX = f"tests/stackhub/big{BIG_COUNT}/date=2026-11-10/"


def big_body(i: int) -> bytes:
    return f"{HEADER}\ndev-{i},2026-11-10T00:00:00,20.0,0.1,100.0,1000,{i},0\n".encode()


@pytest.fixture(scope="module")
def big_partition(container):
    """20,000 tiny data files + marker, uploaded in parallel once and reused while complete."""
    names = [f"part-{i:05d}.csv" for i in range(BIG_COUNT)]
    present = sum(1 for _ in container.list_blobs(name_starts_with=BIG_PREFIX + "part-", results_per_page=5000))
    if present != BIG_COUNT or not container.get_blob_client(BIG_PREFIX + "_SUCCESS").exists():
        with ThreadPoolExecutor(max_workers=10) as pool:
            list(pool.map(lambda i: container.upload_blob(BIG_PREFIX + names[i], big_body(i), overwrite=True), range(BIG_COUNT)))
        container.upload_blob(BIG_PREFIX + "_SUCCESS", b"", overwrite=True)
    return names


def test_twenty_thousand_blob_partition(big_partition):
    summary = operator(f"tests/stackhub/big{BIG_COUNT}/", expected_columns=COLUMNS).execute({})
    expected = fingerprint_entries(
        (name, len(big_body(i)), hashlib.md5(big_body(i)).digest(), None) for i, name in enumerate(big_partition)
    )
    assert (summary["fingerprint"], summary["file_count"], summary["bytes"]) == expected
    hook = StackHubBlobHook()
    manifest = json.loads(hook.container_client("training").download_blob(summary["manifest"]).readall())
    assert len(manifest["files"]) == BIG_COUNT and manifest["fingerprint"]["value"] == expected[0]
    assert len(manifest["schema"]["checked_files"]) == 20  # a sample, not 20,000 header reads


def test_the_hooks_listing_reads_what_the_sdk_lists(container):
    """The hook reads List Blobs pages itself (stackhub_listing); on Azurite each entry must match the
    SDK's BlobProperties: names the URL and XML must escape, a blob staged in blocks (no Content-MD5),
    and several pages."""
    from azure.storage.blob import BlobBlock

    prefix = "tests/stackhub/listing/n=3 & more/date=2026-11-12/"
    names = ["part-00000.csv", "part-0001 é ü.csv", "part-0002&<x>.csv", "part-0003=+%.csv", "_SUCCESS"]
    write_partition(container, prefix, {name: csv_body(2, seed=i) for i, name in enumerate(names)})
    blocks = container.get_blob_client(prefix + "part-0004-blocks.csv")
    blocks.stage_block("b1", csv_body(1))
    blocks.commit_block_list([BlobBlock("b1")])

    def field(blob):
        md5 = blob.content_settings.content_md5
        return (blob.name, blob.size, bytes(md5) if md5 else None, blob.etag)

    sdk = [field(b) for b in container.list_blobs(name_starts_with=prefix)]
    hook = StackHubBlobHook(results_per_page=2)
    assert [tuple(entry) for entry in hook.iter_listing("training", prefix)] == sdk
    assert len(sdk) == 6 and sdk[-1][2] is None  # the block-list blob has no Content-MD5, only its ETag


def test_dag_shaped_call_with_rendered_prefix(container):
    """How the DAG calls it: the prefix is already rendered (no partition_key), wasb_conn_id alias."""
    prefix = "tests/stackhub/dagshape/date=2026-11-11/"
    write_partition(container, prefix, {"part-00000.csv": csv_body(3), "_SUCCESS": b""})
    op = StackHubPartitionOperator(
        task_id="validate_partition",
        wasb_conn_id="stackhub_blob",
        container="training",
        prefix=prefix,
        expected_columns=COLUMNS,
        datastore="stackhub_data",
    )
    summary = op.execute({})
    assert summary["partition_date"] == "2026-11-11" and summary["file_count"] == 1
    assert summary["data_uri"] == f"azureml://datastores/stackhub_data/paths/{prefix}"
