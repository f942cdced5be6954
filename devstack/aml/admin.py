"""A client for the AML double's admin routes (faults, request counters, health), for tests and benches.

The admin routes are the double's test-instrument side (like Azurite's or moto's); the production code
never calls them. Faults set here hit every client of that double until cleared: use ``injected`` so
they are cleared even when the test fails.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class AmlDoubleAdmin:
    """``/_admin/faults``, ``/_admin/requests`` and ``/healthz`` of one AML double."""

    def __init__(self, endpoint: str, ca_file: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=ca_file)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AmlDoubleAdmin:
        """The stack's double, from stack.env's variables (or the process environment)."""
        return cls(env["EDGE_AML_ENDPOINT"], env["EDGE_AML_CA_FILE"])

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.endpoint}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self._ssl, timeout=timeout) as resp:
            payload = resp.read()
        return json.loads(payload) if payload else None

    def add_fault(self, route: str, kind: str, **spec: Any) -> dict:
        """``kind``: 429, 500, 503, delay, slow_job (``delay`` extra seconds of work on the VM), or
        job_epilogue (the shell ``command`` runs after the job's own, e.g. to break its outputs).
        ``route`` is a route key or a regex on "METHOD /path"; ``body``, a regex the request body must
        contain too; ``share`` and ``count`` limit how often it strikes."""
        return self._call("POST", "/_admin/faults", {"route": route, "kind": kind, **spec})["fault"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_admin/faults")

    def remove_fault(self, fault: Mapping[str, Any]) -> None:
        """Remove one fault (as add_fault returned it), leaving the others' in place."""
        try:
            self._call("DELETE", f"/_admin/faults/{fault['id']}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # already gone
                raise

    @contextmanager
    def injected(self, route: str, kind: str, **spec: Any) -> Iterator[dict]:
        fault = self.add_fault(route, kind, **spec)
        try:
            yield fault
        finally:
            self.remove_fault(fault)

    def requests(self, since: float | None = None) -> dict[str, Any]:
        """``{"counts": {route key: n}, "recent": [{method, path, route, status, ...}]}``; with ``since``
        (epoch seconds), only the recent requests logged after it."""
        return self._call("GET", "/_admin/requests" + (f"?since={since!r}" if since is not None else ""), timeout=60)

    def reset_requests(self) -> None:
        self._call("DELETE", "/_admin/requests")

    def jobs_in_flight(self) -> int:
        """Jobs the double is running or has queued for its computes (not yet in a terminal state)."""
        return int(self._call("GET", "/healthz", timeout=5)["jobs_running"])
