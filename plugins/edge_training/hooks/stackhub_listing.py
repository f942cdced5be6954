"""A partition's blob listing, read straight from the List Blobs pages.

azure-storage-blob turns each listed blob into a ``BlobProperties`` through its generic XML
deserializer: most of the time of validating a 20,000-blob partition (bench/validation.py's
profile), far more than the service takes to answer.
Validation needs four fields of each entry, so :func:`iter_blob_entries` sends the same List Blobs
request through the container client's own pipeline (same endpoint, shared-key signing, API
version, retry and logging policies), reads those fields with ElementTree and drops each entry once
read, and asks for the next page while the caller works through the current one.

Private API, used here only: ``ContainerClient._client._send_request`` (the generated client's
"run this request through the pipeline"); no public method returns a listing page undeserialized.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlencode

from edge_training.exceptions import StackHubError

#: The service's own cap on entries per List Blobs page.
MAX_PAGE_SIZE = 5000
#: How much of a page the parser takes at a time.
PARSE_CHUNK_BYTES = 64 * 1024


class BlobEntry(NamedTuple):
    """What validation reads of a listed blob."""

    name: str
    size: int
    content_md5: bytes | None
    etag: str | None


def listing_url(container_url: str, prefix: str, page_size: int, marker: str | None) -> str:
    """The List Blobs URL of one page. Values are percent-encoded in full (``=`` and ``/`` too): the
    shared-key signature is computed over the decoded query, and Azurite and Stack Hub both refuse
    a prefix such as ``n=2000/`` left unencoded."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size: expected 1 to {MAX_PAGE_SIZE} entries per page, found {page_size}")
    params = {"restype": "container", "comp": "list", "prefix": prefix, "maxresults": str(page_size)}
    if marker:
        params["marker"] = marker
    return f"{container_url}?{urlencode(params, quote_via=quote, safe='')}"


def next_marker(page: bytes) -> str | None:
    """The page's NextMarker, found without parsing the page: it is the document's last element, and
    a blob name cannot contain the literal tag (XML escapes its ``<``)."""
    start = page.rfind(b"<NextMarker>")
    if start < 0:
        return None
    start += len(b"<NextMarker>")
    end = page.find(b"</NextMarker>", start)
    if end < 0:
        raise StackHubError("List Blobs page: <NextMarker> is not closed; expected a complete XML document")
    text = page[start:end].decode("utf-8")
    if not text:
        return None
    # The marker is echoed back verbatim; unescape the five XML entities, as a parser would.
    return ET.fromstring(f"<m>{text}</m>").text


def parse_page(page: bytes) -> Iterator[BlobEntry]:
    """The entries of one List Blobs page, in the service's order. The page is parsed a chunk at a
    time and each entry's elements are freed once read, so a page never becomes a whole tree."""
    parser = ET.XMLPullParser(events=("end",))
    for offset in range(0, len(page), PARSE_CHUNK_BYTES):
        parser.feed(page[offset : offset + PARSE_CHUNK_BYTES])
        yield from _entries(parser.read_events())
    parser.close()
    yield from _entries(parser.read_events())


def _entries(events: Iterator[tuple[str, Any]]) -> Iterator[BlobEntry]:
    for _, element in events:
        if element.tag != "Blob":
            continue
        name_element = element.find("Name")
        properties = element.find("Properties")
        if name_element is None or properties is None:
            raise StackHubError("List Blobs page: a <Blob> without <Name> or <Properties>; expected both")
        name = name_element.text or ""
        if name_element.get("Encoded") == "true":  # names with characters XML cannot carry
            name = unquote(name)
        yield BlobEntry(
            name=name,
            size=int(properties.findtext("Content-Length") or 0),
            content_md5=_decode_md5(name, properties.findtext("Content-MD5")),
            etag=properties.findtext("Etag") or None,
        )
        element.clear()


def _decode_md5(name: str, text: str | None) -> bytes | None:
    if not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise StackHubError(f"blob {name!r}: Content-MD5 {text!r} is not base64; expected the service's digest") from None


def _raise_for_status(response: Any) -> None:
    """Raise what the SDK raises for a failed listing, so callers handle one set of errors."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
    )

    if response.status_code < 300:
        return
    code = response.headers.get("x-ms-error-code") or ""
    error_class = {404: ResourceNotFoundError, 401: ClientAuthenticationError, 403: ClientAuthenticationError}
    error = error_class.get(response.status_code, HttpResponseError)(
        message=f"List Blobs answered {response.status_code} {response.reason}\nErrorCode:{code}", response=response
    )
    error.error_code = code or None
    raise error


def fetch_page(container_client: Any, prefix: str, page_size: int, marker: str | None) -> bytes:
    """One List Blobs page's body, through the container client's pipeline."""
    from azure.core.rest import HttpRequest

    request = HttpRequest(
        "GET",
        listing_url(container_client.url, prefix, page_size, marker),
        headers={"x-ms-version": container_client.api_version, "Accept": "application/xml"},
    )
    response = container_client._client._send_request(request)
    _raise_for_status(response)
    return response.content


def iter_blob_entries(container_client: Any, prefix: str, page_size: int) -> Iterator[BlobEntry]:
    """Every blob under ``prefix``, sorted by name as the service lists them, page by page. The next
    page is requested while the caller works through the current one."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-listing") as prefetch:
        pending: Future[bytes] | None = prefetch.submit(fetch_page, container_client, prefix, page_size, None)
        while pending is not None:
            page = pending.result()
            marker = next_marker(page)
            pending = prefetch.submit(fetch_page, container_client, prefix, page_size, marker) if marker else None
            yield from parse_page(page)
