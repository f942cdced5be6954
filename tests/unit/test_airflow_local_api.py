"""The tests' REST client sends a call again when Postgres aborted it in a deadlock (a 500 "Database
error"), and only then."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.airflow_local import LocalAirflow
from devstack.base import StackError


def serve(answers: list[tuple[int, dict]]):
    """A local server answering PATCH calls with ``answers`` in turn; returns (server, calls)."""
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self):  # noqa: N802 - the http.server naming
            calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body = answers[min(len(calls), len(answers)) - 1]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, calls


def client(server) -> LocalAirflow:
    airflow = LocalAirflow(name="api-client-test", port=server.server_address[1])
    airflow.token = lambda: "token"
    return airflow


DEADLOCK = (500, {"detail": {"reason": "Database error", "message": "Serious error when handling your request."}})


def test_a_deadlocked_call_is_sent_again_until_it_lands():
    server, calls = serve([DEADLOCK, (200, {"state": "failed"})])
    try:
        assert client(server).api("PATCH", "/dags/d/dagRuns/r", {"state": "failed"}) == {"state": "failed"}
    finally:
        server.shutdown()
    assert calls == [{"state": "failed"}, {"state": "failed"}]


def test_other_errors_and_a_lasting_deadlock_are_raised_naming_the_call():
    server, calls = serve([(500, {"detail": "boom"})])
    try:
        with pytest.raises(StackError, match=r"PATCH /dags/d -> 500: .*boom"):
            client(server).api("PATCH", "/dags/d", {"is_paused": False})
        assert len(calls) == 1
        server2, calls2 = serve([DEADLOCK])
        try:
            with pytest.raises(StackError, match="Database error"):
                client(server2).api("PATCH", "/dags/d", {"is_paused": False}, attempts=3)
        finally:
            server2.shutdown()
        assert len(calls2) == 3
    finally:
        server.shutdown()
