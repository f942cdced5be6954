"""What every route family of the AML double shares: the double's state (``AmlDouble``), the request and
error types, workspace helpers, the fault and request-counter registry, and the one dispatcher in front of
the route table (bearer check, fault injection, request log, SDK capture).

The routes themselves live in one module per family (routes_identity, routes_arm, routes_assets,
routes_jobs, routes_studio, routes_admin); asgi_app.py registers them in order and builds the Starlette app.
Every route was confirmed against the SDK's own requests (tests/integration/test_aml_double_*.py drive
them with the real azure-ai-ml client). A route the double does not know answers 404 with the method and
path, so a new SDK call shows up in the log instead of passing silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devstack.aml import config
from devstack.aml.metadata_store import Store

log = logging.getLogger("aml-double")

PROVIDER = "Microsoft.MachineLearningServices"
WS_RE = (r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
         r"microsoft\.machinelearningservices/workspaces/(?P<ws>[^/]+)")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw: bytes
    params: dict[str, str] = field(default_factory=dict)
    #: A "slow_job" fault picked for this request (only PUT job acts on it).
    hold_s: float | None = None
    #: A "job_epilogue" fault picked for this request (only PUT job acts on it).
    epilogue: str | None = None


@dataclass
class Fault:
    route: str
    # "429" | "500" | "503" | "delay"; "slow_job": a job created by this request runs ``delay`` seconds
    # longer on the VM (its container prints a line a second first), like a long training would;
    # "job_epilogue": a job created by this request runs the shell ``command`` after its own command
    # succeeds (to break its outputs, as a buggy training script would).
    kind: str
    share: float = 1.0
    count: int | None = None
    retry_after: float = 1.0
    delay: float = 1.0
    command: str = ""
    #: A regex the request body must contain too (e.g. a partition's tag on a model version PUT, whose
    #: path does not name the partition), so side-by-side cases scope a fault to their own requests.
    body: str = ""
    hits: int = 0
    #: Names the fault for DELETE /_admin/faults/<id> (cases running side by side remove only their own).
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


FAULT_KINDS = ("429", "500", "503", "delay", "slow_job", "job_epilogue")
#: Kinds that change the job a PUT creates instead of the answer to the request.
JOB_FAULT_KINDS = ("slow_job", "job_epilogue")


class Faults:
    """Injected failures per route, plus per-route request counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        # Enough for the fault battery's side-by-side runs (a few thousand requests a minute at most).
        self.recent: deque[dict] = deque(maxlen=50_000)

    def add(self, spec: dict) -> Fault:
        kind = str(spec.get("kind", ""))
        if kind not in FAULT_KINDS:
            raise HttpError(400, "BadFault", f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
        if not spec.get("route"):
            raise HttpError(400, "BadFault", "fault needs a 'route' (a route key like 'GET job' or a regex on "
                                             "'METHOD /path')")
        if kind == "job_epilogue" and not str(spec.get("command") or "").strip():
            raise HttpError(400, "BadFault", "a job_epilogue fault needs a shell 'command' to run after the job's own")
        fault = Fault(route=spec["route"], kind=kind, share=float(spec.get("share", 1.0)),
                      count=None if spec.get("count") is None else int(spec["count"]),
                      retry_after=float(spec.get("retry_after", 1.0)), delay=float(spec.get("delay", 1.0)),
                      command=str(spec.get("command") or ""), body=str(spec.get("body") or ""))
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            kept = [f for f in self.faults if f.id != fault_id]
            removed = len(kept) != len(self.faults)
            self.faults = kept
        return removed

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.recent.clear()

    def pick(self, route_key: str, method: str, path: str, body: bytes = b"") -> Fault | None:
        with self._lock:
            self.counts[route_key] += 1
            for fault in self.faults:
                if fault.count is not None and fault.hits >= fault.count:
                    continue
                if fault.route != route_key and not re.search(fault.route, f"{method} {path}"):
                    continue
                if fault.body and not re.search(fault.body, body.decode("utf-8", "replace")):
                    continue
                if random.random() >= fault.share:
                    continue
                fault.hits += 1
                return fault
        return None


# ---------------------------------------------------------------------- helpers every family uses
def ws_base(p: dict) -> str:
    return (f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}/providers/{PROVIDER}"
            f"/workspaces/{p['ws']}")


def check_workspace(p: dict) -> None:
    if p["ws"].lower() != config.WORKSPACE.lower() or p["rg"].lower() != config.RESOURCE_GROUP.lower() \
            or p["sub"].lower() != config.SUBSCRIPTION.lower():
        raise HttpError(404, "ResourceNotFound",
                        f"Workspace {p['sub']}/{p['rg']}/{p['ws']} not found: this double serves "
                        f"subscription {config.SUBSCRIPTION}, resource group {config.RESOURCE_GROUP}, "
                        f"workspace {config.WORKSPACE}")


def system_data(created: float, updated: float | None = None) -> dict:
    return {"createdAt": iso(created), "createdBy": config.CLIENT_ID, "createdByType": "Application",
            "lastModifiedAt": iso(updated or created), "lastModifiedBy": config.CLIENT_ID,
            "lastModifiedByType": "Application"}


def view_ok(view: str, archived: Any) -> bool:
    """Whether an item with ``archived`` is listed under ``listViewType`` ``view``."""
    view = (view or "ActiveOnly").lower()
    if view == "all":
        return True
    if view == "archivedonly":
        return bool(archived)
    return not archived


#: A mounted handler: (request, path, query) -> response.
MountHandler = Callable[[Request, str, dict[str, str]], Awaitable[Response]]


@dataclass
class Mount:
    """Paths a family's own handler serves ahead of the route table: no fault injection, no bearer check.
    ``record_as`` names the route key in the request log (None: not logged)."""
    exact: tuple[str, ...]
    prefixes: tuple[str, ...]
    record_as: str | None
    handler: MountHandler

    def matches(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)


class AmlDouble:
    """The double's state and its dispatcher. ``runner`` executes jobs (devstack.aml.runner.JobRunner).

    Route families add their routes to ``routes`` (a regex table, first match wins) through ``route`` and
    their non-table paths (health, admin, studio, log files) to ``mounts`` through ``mount``;
    devstack/aml/asgi_app.py does it in order.
    """

    def __init__(self, *, store: Store, endpoint: str, state_dir: Path, storage: Any, runner: Any,
                 files_secret: bytes, client_secret: str) -> None:
        self.store = store
        self.endpoint = endpoint.rstrip("/")
        self.state_dir = state_dir
        self.storage = storage
        self.runner = runner
        self.files_secret = files_secret
        self.client_secret = client_secret
        self.faults = Faults()
        # Development aid: AML_DOUBLE_CAPTURE=<file> appends every SDK request (method, path, query, body).
        self.capture_file = os.environ.get("AML_DOUBLE_CAPTURE")
        self.routes: list[tuple[str, re.Pattern, str, Callable[[Req], Any]]] = []
        self.mounts: list[Mount] = []

    def route(self, method: str, pattern: str, key: str):
        def deco(fn):
            self.routes.append((method, re.compile(pattern + r"/?$", re.IGNORECASE), key, fn))
            return fn
        return deco

    def mount(self, handler: MountHandler, *, exact: tuple[str, ...] = (), prefixes: tuple[str, ...] = (),
              record_as: str | None = None) -> None:
        self.mounts.append(Mount(exact=exact, prefixes=prefixes, record_as=record_as, handler=handler))

    async def dispatch(self, request: Request) -> Response:
        started = time.monotonic()
        method = request.method
        path = request.url.path
        query = {k: v for k, v in request.query_params.items()}
        api_version = query.get("api-version", "")
        for mount in self.mounts:
            if mount.matches(path):
                resp = await mount.handler(request, path, query)
                if mount.record_as is not None:
                    self._record(method, path, api_version, mount.record_as, resp.status_code, started)
                return resp
        raw = await request.body()

        handler, key, params = None, f"{method} unknown", {}
        for m, pattern, route_key, fn in self.routes:
            if m != method:
                continue
            match = pattern.match(path)
            if match:
                handler, key, params = fn, route_key, match.groupdict()
                break

        fault = self.faults.pick(key, method, path, raw)
        hold_s = epilogue = None
        if fault is not None and fault.kind in JOB_FAULT_KINDS:
            hold_s = fault.delay if fault.kind == "slow_job" else None
            epilogue = fault.command if fault.kind == "job_epilogue" else None
        elif fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            else:
                status = int(fault.kind)
                headers = {"Retry-After": f"{fault.retry_after:g}"} if status in (429, 503) else {}
                resp = JSONResponse({"error": {"code": "TooManyRequests" if status == 429 else "ServiceError",
                                               "message": f"injected fault {fault.kind} on {key}"}},
                                    status_code=status, headers=headers)
                self._record(method, path, api_version, key, status, started, injected=fault.kind)
                return resp

        public = key in {"GET openid-configuration", "POST token", "GET discovery"}
        if not public:
            auth = request.headers.get("authorization", "")
            if not auth.lower().startswith("bearer ") or not auth[7:].strip():
                resp = JSONResponse({"error": {"code": "AuthenticationFailed",
                                               "message": "this request has no bearer token: the AML double "
                                                          "accepts any token, but one must be sent"}},
                                    status_code=401, headers={"WWW-Authenticate": 'Bearer authorization_uri='
                                                              f'"{self.endpoint}/{config.TENANT}"'})
                self._record(method, path, api_version, key, 401, started)
                return resp

        if handler is None:
            resp = JSONResponse({"error": {"code": "NoSuchRoute",
                                           "message": f"the AML double does not serve {method} {path}"}},
                                status_code=404)
            self._record(method, path, api_version, key, 404, started)
            return resp

        body: Any = None
        ctype = request.headers.get("content-type", "")
        if raw and "json" in ctype:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        req = Req(method=method, path=path, query=query, headers=dict(request.headers), body=body, raw=raw,
                  params=params, hold_s=hold_s, epilogue=epilogue)
        req.headers["x-original-url"] = str(request.url)
        if self.capture_file:
            with open(self.capture_file, "a") as fh:
                fh.write(json.dumps({"method": method, "path": re.sub(WS_RE, "B", path, flags=re.IGNORECASE),
                                     "query": query, "body": body}) + "\n")
        try:
            result = await run_in_threadpool(handler, req)
            resp = result if isinstance(result, Response) else JSONResponse(result)
        except HttpError as exc:
            resp = JSONResponse({"error": {"code": exc.code, "message": exc.message, "details": []}},
                                status_code=exc.status)
        except Exception as exc:  # noqa: BLE001 - an internal error must reach the client, named
            log.exception("handler %s failed", key)
            resp = JSONResponse({"error": {"code": "InternalError", "message": f"{key}: {exc!r}"}},
                                status_code=500)
        self._record(method, path, api_version, key, resp.status_code, started)
        return resp

    def _record(self, method: str, path: str, api_version: str, key: str, status: int, started: float,
                injected: str | None = None) -> None:
        entry = {"method": method, "path": path, "api_version": api_version, "route": key, "status": status,
                 "ms": round((time.monotonic() - started) * 1000, 1), "time": time.time()}
        if injected:
            entry["injected"] = injected
        short = re.sub(WS_RE, "B", path, flags=re.IGNORECASE)
        self.faults.recent.append(entry)
        # 416 is how a log that has not grown answers a ranged read: routine, not worth a line.
        if key.endswith("unknown") or (status >= 400 and status != 416):
            log.info("%s %s api-version=%s -> %s (%s)%s", method, short, api_version, status, key,
                     f" injected {injected}" if injected else "")
        else:
            log.debug("%s %s api-version=%s -> %s (%s)", method, short, api_version, status, key)


class RouteFamily:
    """One family of routes: ``register`` adds them to the double. Handlers read the double's shared state
    through the properties below (the double is the one owner of that state)."""

    def __init__(self, double: AmlDouble) -> None:
        self.double = double

    def register(self) -> None:
        raise NotImplementedError

    @property
    def store(self) -> Store:
        return self.double.store

    @property
    def endpoint(self) -> str:
        return self.double.endpoint

    @property
    def storage(self) -> Any:
        return self.double.storage

    @property
    def runner(self) -> Any:
        return self.double.runner
