"""Stack Hub blob storage (Azurite #1): API 2019-07-07 through azure-storage-blob, connection strings only."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from devstack import seed

API = "2019-07-07"


@pytest.fixture
def service(stack_env) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(
        stack_env["EDGE_STACKHUB_CONNECTION_STRING"], api_version=API,
        connection_verify=stack_env["EDGE_CA_FILE"])


@pytest.fixture
def container(service):
    client = service.create_container(f"it-{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


def test_connection_string_builds_the_production_shaped_url(service, stack_env):
    assert service.url == "https://edgedata.blob.local.azurestack.external:47101/"
    assert service.account_name == stack_env["EDGE_STACKHUB_ACCOUNT"] == "edgedata"


def test_upload_and_list_at_stack_hub_api_version(container):
    names = [f"telemetry/date=2026-01-0{i}/part-00000.csv" for i in (1, 2)]
    for i, name in enumerate(names):
        container.upload_blob(name, f"a,b\n{i},2\n".encode())
    listed = sorted(b.name for b in container.list_blobs(name_starts_with="telemetry/"))
    assert listed == names
    assert container.download_blob(names[1]).readall() == b"a,b\n1,2\n"
    # Hierarchical listing (what the partition checks use) works at this API version too.
    prefixes = [p.name for p in container.walk_blobs(name_starts_with="telemetry/", delimiter="/")]
    assert prefixes == ["telemetry/date=2026-01-01/", "telemetry/date=2026-01-02/"]


def test_newer_api_version_is_rejected(stack_env):
    newest = BlobServiceClient.from_connection_string(
        stack_env["EDGE_STACKHUB_CONNECTION_STRING"], connection_verify=stack_env["EDGE_CA_FILE"],
        retry_total=0)
    assert newest.api_version > API
    with pytest.raises(HttpResponseError) as err:
        newest.get_service_properties()
    assert err.value.status_code == 400
    assert "not supported" in str(err.value)


def test_seed_partition_is_idempotent_and_deletable(service, stack_env):
    day = dt.date(2031, 1, 1) + dt.timedelta(days=uuid.uuid4().int % 300)
    kwargs = dict(connection_string=stack_env["EDGE_STACKHUB_CONNECTION_STRING"],
                  ca_file=stack_env["EDGE_CA_FILE"])
    first = seed.seed_partition(day, rows=300, parts=3, **kwargs)
    try:
        prefix = f"telemetry/date={day.isoformat()}/"
        assert first.uploaded == [prefix + n for n in
                                  ("part-00000.csv", "part-00001.csv", "part-00002.csv", "_SUCCESS")]
        container = service.get_container_client(stack_env["EDGE_STACKHUB_CONTAINER"])
        before = {b.name: b.etag for b in container.list_blobs(name_starts_with=prefix)}
        again = seed.seed_partition(day, rows=300, parts=3, **kwargs)
        assert again.uploaded == [] and len(again.skipped) == 4
        after = {b.name: b.etag for b in container.list_blobs(name_starts_with=prefix)}
        assert after == before, "re-seeding rewrote unchanged blobs"
        # Fewer parts: the extra part goes, the marker is rewritten last.
        fewer = seed.seed_partition(day, rows=300, parts=2, **kwargs)
        assert fewer.uploaded[-1] == prefix + "_SUCCESS"
        assert sorted(b.name for b in container.list_blobs(name_starts_with=prefix)) == [
            prefix + "_SUCCESS", prefix + "part-00000.csv", prefix + "part-00001.csv"]
    finally:
        removed = seed.delete_partition(day, **kwargs)
    assert removed[0].endswith("/_SUCCESS")
    assert list(container.list_blobs(name_starts_with=prefix)) == []


def test_default_seeded_partition_matches_the_generator(service, stack_env):
    day = dt.date(2026, 11, 10)
    seed.seed_partition(day, connection_string=stack_env["EDGE_STACKHUB_CONNECTION_STRING"],
                        ca_file=stack_env["EDGE_CA_FILE"])
    container = service.get_container_client("training")
    data = container.download_blob("telemetry/date=2026-11-10/part-00000.csv").readall()
    assert data.startswith(b"device_id,timestamp,temperature_c,vibration_mm_s,pressure_kpa,rpm,"
                           b"runtime_hours,failure\n")
    from devstack.sample_data import partition_files

    assert data == partition_files(day, rows=seed.DEFAULT_ROWS, parts=seed.DEFAULT_PARTS)["part-00000.csv"]
