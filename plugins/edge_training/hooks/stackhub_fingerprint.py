"""Partition fingerprint: a streaming SHA-256 over the sorted data files of a blob listing.

Split out of the blob hook because the fingerprint is a pure, versioned format that the hook, the
tests and the benchmarks must compute identically; keeping it apart lets them share it without the SDK.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii as json_string

from edge_training.exceptions import StackHubError

FINGERPRINT_VERSION = "edge-training-fingerprint/v1"


class Fingerprint:
    """SHA-256 over the sorted (name, size, Content-MD5 or ETag) of data files, fed one at a time.

    Entries must arrive sorted by name (a blob listing is); nothing is accumulated, so memory is
    flat. Content-MD5 is preferred because it is stable across re-uploads of the same bytes; blobs
    without one (block-list uploads) fall back to their ETag.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256(FINGERPRINT_VERSION.encode() + b"\n")
        self._last: str | None = None
        self.count = 0
        self.bytes = 0

    @staticmethod
    def tag(content_md5: bytes | bytearray | None, etag: str | None) -> str:
        if content_md5:
            return "md5:" + base64.b64encode(bytes(content_md5)).decode()
        if etag:
            return "etag:" + etag.strip('"')
        raise StackHubError("blob has neither Content-MD5 nor ETag: cannot fingerprint it")

    def add(self, name: str, size: int, content_md5: bytes | bytearray | None, etag: str | None) -> None:
        if self._last is not None and name <= self._last:
            raise StackHubError(
                f"blob listing is not sorted by name: {name!r} came after {self._last!r}; "
                "expected the service's lexicographic order"
            )
        # json.dumps([name, size, tag], separators=(",", ":")), written out: the same bytes, without the
        # encoder's per-call set-up (a partition has tens of thousands of entries).
        record = f"[{json_string(name)},{int(size)},{json_string(self.tag(content_md5, etag))}]\n"
        self._hash.update(record.encode())
        self._last = name
        self.count += 1
        self.bytes += int(size)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fingerprint_entries(entries: Iterable[tuple[str, int, bytes | None, str | None]]) -> tuple[str, int, int]:
    """Fingerprint (name, size, content_md5, etag) tuples; return (hexdigest, count, bytes)."""
    fp = Fingerprint()
    for name, size, md5, etag in entries:
        fp.add(name, size, md5, etag)
    return fp.hexdigest(), fp.count, fp.bytes
