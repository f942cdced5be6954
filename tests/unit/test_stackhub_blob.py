"""Pure logic of the Stack Hub hook: locality policy, fingerprint, header parsing, sampling."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from edge_training.exceptions import LocalityPolicyError, SchemaDriftError, StackHubError
from edge_training.hooks.azure_logging import HTTP_LOGGER
from edge_training.hooks.stackhub_blob import (
    PartitionSpec,
    Reservoir,
    StackHubSettings,
    check_container_name,
    compare_columns,
    data_uri,
    parse_header,
)
from edge_training.hooks.stackhub_fingerprint import Fingerprint, fingerprint_entries
from edge_training.hooks.stackhub_locality import check_locality
from edge_training.triggers.stackhub_blob import StackHubPartitionTrigger

DOMAIN = "local.azurestack.external"


@pytest.mark.parametrize(
    "url",
    [
        "https://edgedata.blob.local.azurestack.external:47101/",
        "https://acct1.blob.LOCAL.azurestack.external",
        "https://edgedata.blob.local.azurestack.external./",
    ],
)
def test_locality_accepts_stack_hub_accounts(url):
    assert check_locality(url, stack_hub_domain=DOMAIN).startswith(("edgedata", "acct1"))


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://edgedata.blob.core.windows.net/", "public Azure cloud endpoint"),
        ("https://edgedata.blob.core.chinacloudapi.cn/", "public Azure cloud endpoint"),
        ("https://edgedata.blob.core.usgovcloudapi.net/", "public Azure cloud endpoint"),
        ("https://edgedata.z13.blob.storage.azure.net/", "public Azure cloud endpoint"),
        ("https://edgedata.blob.local.azurestack.external.core.windows.net/", "public Azure cloud endpoint"),
        ("https://edgedata.blob.otherregion.azurestack.external/", "outside the Stack Hub domain"),
        ("https://evil.example/edgedata.blob.local.azurestack.external", "outside the Stack Hub domain"),
        ("https://a.b.blob.local.azurestack.external/", "outside the Stack Hub domain"),
        ("https://blob.local.azurestack.external/", "outside the Stack Hub domain"),
        ("https://127.0.0.1:10000/devstoreaccount1", "outside the Stack Hub domain"),
        # The host a parser sees is the Stack Hub account; a person sees core.windows.net. Refused either way.
        ("https://user@a.blob.core.windows.net@edgedata.blob.local.azurestack.external:47101", "carries user info"),
        ("https://user:pw@edgedata.blob.local.azurestack.external/", "carries user info"),
    ],
)
def test_locality_refuses_outside_endpoints(url, reason):
    with pytest.raises(LocalityPolicyError, match=reason):
        check_locality(url, stack_hub_domain=DOMAIN)


def test_locality_policy_can_allow_public_or_listed_hosts():
    assert check_locality("https://x.blob.core.windows.net", stack_hub_domain=DOMAIN, allow_public_endpoint=True)
    assert check_locality("https://127.0.0.1:10000/a", stack_hub_domain=DOMAIN, allowed_hosts=["127.0.0.1"])


def test_locality_fails_closed_without_a_domain():
    with pytest.raises(LocalityPolicyError, match="no Stack Hub domain is configured"):
        check_locality("https://edgedata.blob.local.azurestack.external", stack_hub_domain=None)


def test_settings_from_extra_keep_the_secret_out_of_repr():
    s = StackHubSettings.from_extra(
        "stackhub_blob",
        {"connection_string": "AccountKey=c2VjcmV0", "ca_bundle": "/ca.crt", "stack_hub_domain": DOMAIN},
    )
    assert "c2VjcmV0" not in repr(s)
    assert s.client_kwargs() == {"api_version": "2019-07-07", "connection_verify": "/ca.crt", "logger": HTTP_LOGGER}
    with pytest.raises(StackHubError, match="no 'connection_string'"):
        StackHubSettings.from_extra("stackhub_blob", {})


def test_public_connection_string_is_refused_before_any_request():
    s = StackHubSettings.from_extra(
        "x",
        {
            "connection_string": "DefaultEndpointsProtocol=https;AccountName=edgedata;"
            "AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
            "stack_hub_domain": DOMAIN,
        },
    )
    with pytest.raises(LocalityPolicyError, match=r"edgedata\.blob\.core\.windows\.net is a public"):
        s.service_client()


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


def test_fingerprint_is_deterministic_and_sensitive():
    entries = [("part-00000.csv", 10, _md5(b"a"), '"0x1"'), ("part-00001.csv", 20, None, '"0x2"')]
    digest, count, size = fingerprint_entries(entries)
    assert (count, size) == (2, 30)
    assert digest == fingerprint_entries(list(entries))[0]
    changed_size = [("part-00000.csv", 11, _md5(b"a"), '"0x1"'), entries[1]]
    changed_md5 = [("part-00000.csv", 10, _md5(b"b"), '"0x1"'), entries[1]]
    changed_etag = [entries[0], ("part-00001.csv", 20, None, '"0x3"')]
    renamed = [("part-00000.csv", 10, _md5(b"a"), '"0x1"'), ("part-00002.csv", 20, None, '"0x2"')]
    digests = {fingerprint_entries(e)[0] for e in (changed_size, changed_md5, changed_etag, renamed)}
    assert digest not in digests and len(digests) == 4


def test_fingerprint_prefers_md5_over_etag():
    a = fingerprint_entries([("p", 1, _md5(b"x"), '"etag-1"')])[0]
    b = fingerprint_entries([("p", 1, _md5(b"x"), '"etag-2"')])[0]
    assert a == b  # same bytes re-uploaded: new ETag, same Content-MD5, same fingerprint
    assert Fingerprint.tag(None, '"0x8D"') == "etag:0x8D"
    assert Fingerprint.tag(_md5(b"x"), None) == "md5:" + base64.b64encode(_md5(b"x")).decode()


def test_fingerprint_refuses_unsorted_or_duplicate_names():
    with pytest.raises(StackHubError, match="not sorted"):
        fingerprint_entries([("b", 1, None, "e"), ("a", 1, None, "e")])
    with pytest.raises(StackHubError, match="not sorted"):
        fingerprint_entries([("a", 1, None, "e"), ("a", 1, None, "e")])


def test_fingerprint_names_cannot_collide_through_separators():
    a = fingerprint_entries([("a,1", 2, None, "e")])[0]
    b = fingerprint_entries([("a", 12, None, "e")])[0]
    assert a != b


def test_parse_header():
    assert parse_header(b"a,b,c\n1,2,3\n", blob_size=12, name="f") == ["a", "b", "c"]
    assert parse_header(b"\xef\xbb\xbfa, b ,c\r\n1", blob_size=100, name="f") == ["a", "b", "c"]
    assert parse_header(b'"x,y",z', blob_size=7, name="f") == ["x,y", "z"]  # whole small file, no newline
    with pytest.raises(SchemaDriftError, match="no end of header line within the first 1024 bytes"):
        parse_header(b"a" * 1024, blob_size=5000, name="f")
    with pytest.raises(SchemaDriftError, match="header line is empty"):
        parse_header(b"\n1,2", blob_size=4, name="f")


def test_compare_columns_names_missing_extra_and_duplicates():
    assert compare_columns("f", ["a", "b"], ["a", "b"]) is None
    assert compare_columns("f", ["b", "a"], ["a", "b"]) is None  # order does not matter to a reader by name
    msg = compare_columns("part-1.csv", ["a", "c", "c"], ["a", "b"])
    assert msg == "part-1.csv: missing ['b'], extra ['c', 'c'], duplicated ['c']"


def test_reservoir_is_bounded_and_deterministic():
    r1, r2 = Reservoir(5, seed="p"), Reservoir(5, seed="p")
    for i in range(10_000):
        r1.offer(i)
        r2.offer(i)
    assert len(r1.items) == 5 and r1.items == r2.items and r1.seen == 10_000
    assert max(r1.items) > 5  # later items do get in


def test_container_name_and_data_uri():
    assert check_container_name("training") == "training"
    for bad in ("Training", "tr", "a--b", "../x"):
        with pytest.raises(StackHubError, match="container name"):
            check_container_name(bad)
    assert data_uri("telemetry/date=2026-11-10") == "azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-10/"


def test_trigger_serialises_to_plain_kwargs():
    spec = PartitionSpec(container="training", prefix="telemetry/date=2026-11-10/", expected_columns=("a", "b"))
    trigger = StackHubPartitionTrigger(stackhub_conn_id="stackhub_blob", partition=spec, deadline=1.5e9)
    path, kwargs = trigger.serialize()
    assert path == "edge_training.triggers.stackhub_blob.StackHubPartitionTrigger"
    stored = json.loads(json.dumps(kwargs))  # what the triggerer keeps
    again = StackHubPartitionTrigger(**stored)
    assert again.serialize() == (path, stored)
    assert again.partition == spec


def test_partition_spec_says_what_written_means():
    spec = PartitionSpec(container="training", prefix="telemetry/date=2026-11-10")
    checked = spec.checked()
    assert checked.prefix == "telemetry/date=2026-11-10/" and checked.container == "training"
    assert checked.is_data_file("telemetry/date=2026-11-10/part-00000.csv")
    assert not checked.is_data_file("telemetry/date=2026-11-10/part-00000.csv.tmp")
    assert not checked.is_data_file("telemetry/date=2026-11-10/part-dir.csv/")  # a folder is not a file
    assert not checked.is_data_file("telemetry/date=2026-11-10/_temporary/part-00000.csv")
    assert checked.awaited() == "the _SUCCESS marker"
    assert PartitionSpec("training", "p/", success_marker=None).awaited() == "a data file matching 'part-*.csv'"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (PartitionSpec("Training", "p/"), "container name"),
        (PartitionSpec("training", "p/", manifest_name="sub/_manifest.json"), "plain file name"),
        (PartitionSpec("training", "../p/"), "traversal"),
    ],
)
def test_partition_spec_refuses_unsafe_names(spec, error):
    with pytest.raises(StackHubError, match=error):
        spec.checked()


def test_operator_maps_the_run_key_and_refuses_a_missing_one():
    from edge_training.exceptions import InvalidPartitionKeyError
    from edge_training.operators.stackhub_blob import StackHubPartitionOperator

    def op(key):
        return StackHubPartitionOperator(task_id="v", prefix="telemetry/date={partition_date}/", partition_key=key)

    spec = op("2026-11-10T02:00:00").partition_spec()
    assert (spec.prefix, spec.partition_key) == ("telemetry/date=2026-11-10/", "2026-11-10T02:00:00")
    for missing in (None, ""):
        with pytest.raises(InvalidPartitionKeyError, match="no partition key was given"):
            op(missing).partition_spec()
    # Text "None" (a template rendered as text over an absent key) is a bad key, not a missing one.
    with pytest.raises(InvalidPartitionKeyError, match="partition key 'None' is not a date"):
        op("None").partition_spec()
    with pytest.raises(StackHubError, match="disagree"):
        StackHubPartitionOperator(task_id="v", prefix="p/", stackhub_conn_id="a", wasb_conn_id="b")


# --- List Blobs pages (stackhub_listing) -----------------------------------------------------------

LISTING_PAGE = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><EnumerationResults ContainerName="training">'
    b"<Prefix>t/date=2026-11-10/</Prefix><Blobs>"
    b"<Blob><Name>t/date=2026-11-10/part-0 &amp; &lt;1&gt;.csv</Name><Properties><Etag>0x8D1</Etag>"
    b"<Content-Length>120</Content-Length><Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg==</Content-MD5></Properties></Blob>"
    b'<Blob><Name Encoded="true">t/date=2026-11-10/part-%EF%BF%BE.csv</Name><Properties><Etag>0x8D2</Etag>'
    b"<Content-Length>0</Content-Length><Content-MD5 /></Properties></Blob>"
    b"</Blobs><NextMarker>2!64!t/date=2026-11-10/part-&amp;</NextMarker></EnumerationResults>"
)


def test_a_listing_page_gives_name_size_md5_and_etag_of_each_blob_in_order():
    from edge_training.hooks.stackhub_listing import BlobEntry, next_marker, parse_page

    assert list(parse_page(LISTING_PAGE)) == [
        BlobEntry("t/date=2026-11-10/part-0 & <1>.csv", 120, hashlib.md5(b"").digest(), "0x8D1"),
        BlobEntry("t/date=2026-11-10/part-\ufffe.csv", 0, None, "0x8D2"),
    ]
    # The marker is read from the page's end, unescaped as a parser would, and sent back as found.
    assert next_marker(LISTING_PAGE) == "2!64!t/date=2026-11-10/part-&"
    assert next_marker(LISTING_PAGE.replace(b"<NextMarker>2!64!t/date=2026-11-10/part-&amp;</NextMarker>",
                                            b"<NextMarker />")) is None
    assert next_marker(LISTING_PAGE.replace(b"2!64!t/date=2026-11-10/part-&amp;", b"")) is None


def test_a_page_parsed_in_chunks_gives_the_same_entries(monkeypatch):
    from edge_training.hooks import stackhub_listing

    whole = list(stackhub_listing.parse_page(LISTING_PAGE))
    monkeypatch.setattr(stackhub_listing, "PARSE_CHUNK_BYTES", 7)
    assert list(stackhub_listing.parse_page(LISTING_PAGE)) == whole


def test_a_bad_listing_page_is_named():
    from edge_training.hooks.stackhub_listing import next_marker, parse_page

    with pytest.raises(StackHubError, match=r"blob 't/date=2026-11-10/part-0 & <1>.csv': Content-MD5 '\*\*' "
                                            r"is not base64"):
        list(parse_page(LISTING_PAGE.replace(b"1B2M2Y8AsgTpgAmY7PhCfg==", b"**")))
    with pytest.raises(StackHubError, match="without <Name> or <Properties>"):
        list(parse_page(b"<EnumerationResults><Blobs><Blob><Name>x</Name></Blob></Blobs></EnumerationResults>"))
    with pytest.raises(StackHubError, match="<NextMarker> is not closed"):
        next_marker(b"<EnumerationResults><NextMarker>abc")


def test_listing_urls_encode_every_reserved_character_of_prefix_and_marker():
    from edge_training.hooks.stackhub_listing import listing_url

    url = listing_url("https://acct.blob.x:1/training", "t/n=2 000/&", 5000, "m/=&")
    assert url == ("https://acct.blob.x:1/training?restype=container&comp=list&prefix=t%2Fn%3D2%20000%2F%26"
                   "&maxresults=5000&marker=m%2F%3D%26")
    assert "marker" not in listing_url("https://a/c", "p/", 10, None)
    with pytest.raises(ValueError, match="page_size: expected 1 to 5000 entries per page, found 5001"):
        listing_url("https://a/c", "p/", 5001, None)


@pytest.mark.parametrize(("status", "error_name"), [(404, "ResourceNotFoundError"),
                                                    (403, "ClientAuthenticationError"),
                                                    (500, "HttpResponseError")])
def test_a_failed_listing_raises_what_the_sdk_raises_with_the_service_error_code(status, error_name):
    from types import SimpleNamespace

    from edge_training.hooks.stackhub_listing import iter_blob_entries

    response = SimpleNamespace(status_code=status, reason="Nope", headers={"x-ms-error-code": "ContainerNotFound"},
                               content=b"", text=lambda: "", request=None)
    client = SimpleNamespace(url="https://a/c", api_version="2019-07-07",
                             _client=SimpleNamespace(_send_request=lambda request: response))
    with pytest.raises(Exception) as raised:
        list(iter_blob_entries(client, "p/", 10))
    assert type(raised.value).__name__ == error_name
    assert raised.value.error_code == "ContainerNotFound"
    assert raised.value.status_code == status


def test_the_fingerprint_format_is_unchanged():
    """v1 fingerprints are stored in manifests and job tags: a faster encoding must give the same digest."""
    entries = [('a "quoted" é/part-0.csv', 12, hashlib.md5(b"x").digest(), '"0x1"'),
               ("b\\back\nline.csv", 0, None, '"0x8D2"'),
               ("c.csv", 7, bytearray(hashlib.md5(b"y").digest()), None)]
    assert fingerprint_entries(entries) == ("7f6b19f96462a770be798f724eb66544a5c114bd1cc3d8f45160f68e674148d6", 3, 19)


@pytest.mark.parametrize(("name", "size", "md5", "etag"), [
    ('part "0" é\\\n.csv', 12, hashlib.md5(b"x").digest(), '"0x8D1"'),
    ("part-1.csv", 0, None, "0x8D2"),
    ("part-2.csv", 3, bytearray(b"\x00" * 16), None),
])
def test_a_manifest_entry_is_the_json_of_its_fields(name, size, md5, etag):
    from edge_training.hooks.stackhub_blob import manifest_entry

    expected = {"name": name, "size": size, "content_md5": base64.b64encode(bytes(md5)).decode() if md5 else None,
                "etag": (etag or "").strip('"')}
    assert manifest_entry(name, size, md5, etag) == json.dumps(expected, separators=(",", ":"))


def test_the_next_page_is_asked_for_while_the_current_one_is_read():
    import threading
    from types import SimpleNamespace

    from edge_training.hooks.stackhub_listing import iter_blob_entries

    second_asked = threading.Event()

    def send(request):
        if "marker=" in request.url:
            second_asked.set()
            page = LISTING_PAGE.replace(b"<NextMarker>2!64!t/date=2026-11-10/part-&amp;</NextMarker>", b"")
            page = page.replace(b"part-0 ", b"part-9 ").replace(b"part-%EF", b"part-9%EF")
        else:
            page = LISTING_PAGE
        return SimpleNamespace(status_code=200, headers={}, content=page)

    client = SimpleNamespace(url="https://a/c", api_version="2019-07-07", _client=SimpleNamespace(_send_request=send))
    entries = iter_blob_entries(client, "t/", 2)
    first = next(entries)
    # Still inside the first page, the second is already requested (with the first page's marker).
    assert second_asked.wait(5), "the next page was not requested while the first was being read"
    assert [first.name, *(e.name for e in entries)] == [
        "t/date=2026-11-10/part-0 & <1>.csv", "t/date=2026-11-10/part-\ufffe.csv",
        "t/date=2026-11-10/part-9 & <1>.csv", "t/date=2026-11-10/part-9\ufffe.csv"]


def test_sampled_headers_are_read_at_once_and_judged_in_the_sample_order(monkeypatch):
    import threading
    import time

    from edge_training.hooks.stackhub_blob import HEADER_READS_AT_ONCE, StackHubBlobHook

    hook = StackHubBlobHook(stackhub_conn_id="unused")
    monkeypatch.setattr(hook, "get_conn", lambda: None)
    lock = threading.Condition()
    reading, most_at_once, awaited = [0], [0], [0]
    files = [(f"t/part-{i:02d}.csv", 100) for i in range(20)]
    drifted = {"t/part-03.csv", "t/part-17.csv"}

    def read_header(container, name, size):
        with lock:
            reading[0] += 1
            most_at_once[0] = max(most_at_once[0], reading[0])
            lock.notify_all()
            # Each read answers once the expected number are under way (not after a fixed sleep, which a
            # loaded machine can outlast before the pool's threads start); a serial pass gives up waiting.
            if not lock.wait_for(lambda: most_at_once[0] >= awaited[0], timeout=2):
                awaited[0] = 0
        time.sleep(0.05 if name != "t/part-03.csv" else 0.2)  # the first drifted file answers last
        with lock:
            reading[0] -= 1
        return ["a", "c"] if name in drifted else ["a", "b"]

    monkeypatch.setattr(hook, "read_header", read_header)
    awaited[0] = 3
    assert hook.check_schema(container="c", files=files[:3], expected_columns=None) == ["a", "b"]
    assert most_at_once[0] == 3
    most_at_once[0], awaited[0] = 0, HEADER_READS_AT_ONCE
    with pytest.raises(SchemaDriftError) as refused:
        hook.check_schema(container="c", files=files, expected_columns=None)
    assert most_at_once[0] == HEADER_READS_AT_ONCE
    message = str(refused.value)
    assert "schema drift in 2 of 20 checked data file(s) against the header of t/part-00.csv" in message
    assert message.index("t/part-03.csv") < message.index("t/part-17.csv")


def test_a_failed_header_read_raises_the_first_failing_file_of_the_sample(monkeypatch):
    from edge_training.hooks.stackhub_blob import StackHubBlobHook

    hook = StackHubBlobHook(stackhub_conn_id="unused")
    monkeypatch.setattr(hook, "get_conn", lambda: None)

    def read_header(container, name, size):
        if name in ("t/part-2.csv", "t/part-5.csv"):
            raise SchemaDriftError(f"{name}: header line is empty")
        return ["a"]

    monkeypatch.setattr(hook, "read_header", read_header)
    files = [(f"t/part-{i}.csv", 10) for i in range(8)]
    with pytest.raises(SchemaDriftError, match=r"^t/part-2\.csv: header line is empty$"):
        hook.check_schema(container="c", files=files, expected_columns=["a"])
