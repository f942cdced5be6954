"""Admin routes of the AML double (its test-instrument side, no bearer token; devstack/aml/admin.py is
their client): ``/healthz``, ``/_admin/faults`` (inject, list, clear, remove one) and ``/_admin/requests``
(per-route counters and the recent-request log). The fault registry itself is ``http_core.Faults``."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devstack.aml.http_core import Faults, HttpError, RouteFamily


class AdminRoutes(RouteFamily):
    def register(self) -> None:
        self.double.mount(self.health, exact=("/healthz",))
        self.double.mount(self.admin, prefixes=("/_admin/",))

    @property
    def faults(self) -> Faults:
        return self.double.faults

    async def health(self, request: Request, path: str, query: dict[str, str]) -> Response:
        return JSONResponse({"status": "ok", "service": "aml-double", "jobs_running":
                             self.runner.active_count()})

    async def admin(self, request: Request, path: str, query: dict[str, str]) -> Response:
        method = request.method
        if path == "/_admin/faults":
            if method == "GET":
                return JSONResponse({"faults": [f.__dict__ for f in self.faults.faults]})
            if method == "DELETE":
                self.faults.clear()
                return JSONResponse({"faults": []})
            if method == "POST":
                try:
                    spec = json.loads(await request.body() or b"{}")
                    fault = self.faults.add(spec)
                except HttpError as exc:
                    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=400)
                except ValueError as exc:
                    return JSONResponse({"error": {"code": "BadFault", "message": str(exc)}}, status_code=400)
                return JSONResponse({"fault": fault.__dict__}, status_code=201)
        if path.startswith("/_admin/faults/") and method == "DELETE":
            fault_id = path.rsplit("/", 1)[1]
            if not self.faults.remove(fault_id):
                return JSONResponse({"error": {"code": "NoSuchFault", "message": f"no fault {fault_id!r}"}},
                                    status_code=404)
            return JSONResponse({"faults": [f.__dict__ for f in self.faults.faults]})
        if path == "/_admin/requests":
            if method == "GET":
                # ?since=<epoch seconds>: only the requests logged after it (a poller fetches each entry once).
                since = float(query["since"]) if query.get("since") else None
                recent = [r for r in list(self.faults.recent) if since is None or r["time"] > since]
                return JSONResponse({"counts": dict(self.faults.counts), "recent": recent})
            if method == "DELETE":
                self.faults.reset_counts()
                return JSONResponse({"counts": {}})
        return JSONResponse({"error": {"code": "NoSuchRoute", "message": f"{method} {path}"}}, status_code=404)
