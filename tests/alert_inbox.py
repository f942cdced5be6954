"""A webhook on loopback that keeps each alert POSTed to it: the tests' Airflow sends its alerts here.

Started by the session's ``airflow`` fixture before the Airflow it configures (``EDGE_ALERT_TARGET``), so
the alerts of every task that fails for good and of every run past its deadline arrive in this process,
where a case finds its own by run id.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class AlertInbox:
    def __init__(self) -> None:
        self.alerts: list[dict] = []
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                alert = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with inbox._lock:
                    inbox.alerts.append(alert)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="alert-inbox").start()

    def received(self, event: str, run_id: str) -> list[dict]:
        with self._lock:
            return [a for a in self.alerts if a.get("event") == event and a.get("run_id") == run_id]

    def wait(self, event: str, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(event, run_id)
            if found:
                return found[0]
            time.sleep(1)
        with self._lock:
            seen = [(a.get("event"), a.get("run_id")) for a in self.alerts]
        raise AssertionError(f"no {event} alert for {run_id} after {timeout:.0f}s; received {seen[-20:]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
