"""Job and run-history routes of the AML double: ``B/jobs`` (create, get, list, cancel and its operation),
run history (``/history/v1.0B/runs/...``, ``rundata``) and the HMAC-signed log file URLs (``/_files/``)
that run details hand out."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import quote, unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devstack.aml import config
from devstack.aml.http_core import (
    PROVIDER,
    WS_RE,
    HttpError,
    Req,
    RouteFamily,
    check_workspace,
    iso,
    system_data,
    view_ok,
    ws_base,
)

TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}


def comparable(value: Any) -> Any:
    """A job-spec value with empty values dropped and keys sorted, to compare two specs."""
    if value in (None, {}, []):
        return None
    if isinstance(value, dict):
        cleaned = {k: comparable(v) for k, v in sorted(value.items()) if comparable(v) is not None}
        return cleaned or None
    return value


class JobRoutes(RouteFamily):
    def register(self) -> None:
        r = self.double.route
        B = WS_RE

        r("GET", B + r"/jobs", "GET jobs")(self.list_jobs)
        r("PUT", B + r"/jobs/(?P<name>[^/]+)", "PUT job")(self.put_job)
        r("GET", B + r"/jobs/(?P<name>[^/]+)", "GET job")(self.get_job)
        r("POST", B + r"/jobs/(?P<name>[^/]+)/cancel", "POST job cancel")(self.cancel_job)
        r("GET", r"/_operations/cancel/(?P<name>[^/]+)", "GET cancel operation")(self.cancel_operation)

        H = r"/history/v1\.0" + WS_RE
        r("GET", H + r"(?:/experiments/[^/]+|/experimentids/[^/]+)?/runs/(?P<name>[^/]+)/details",
          "GET run details")(self.run_details)
        r("GET", H + r"(?:/experiments/[^/]+|/experimentids/[^/]+)?/runs/(?P<name>[^/]+)", "GET run")(
            self.get_run)
        r("POST", H + r"/rundata", "POST rundata")(self.run_data)
        r("GET", H + r"(?:/experiments/[^/]+|/experimentids/[^/]+)?/runs/(?P<name>[^/]+)/children",
          "GET run children")(self.run_children)

        self.double.mount(self.files, prefixes=("/_files/",), record_as="GET file")

    # ------------------------------------------------------------------ jobs
    def job_body(self, p: dict, job: dict) -> dict:
        name = job["name"]
        props = json.loads(json.dumps(job["spec"]))
        props["status"] = job["status"]
        props.setdefault("experimentName", "Default")
        props.setdefault("displayName", name)
        props.setdefault("tags", {})
        props.setdefault("properties", {})
        props.setdefault("isArchived", False)
        props.setdefault("environmentVariables", {})
        props["services"] = {
            "Studio": {"jobServiceType": "Studio",
                       "endpoint": f"{self.endpoint}/studio/jobs/{quote(name)}?wsid={quote(ws_base(p))}"},
            "Tracking": {"jobServiceType": "Tracking",
                         "endpoint": f"azureml://{config.LOCATION}.api.azureml.ms/mlflow/v1.0{ws_base(p)}"},
        }
        outputs = props.get("outputs") or {}
        for out_name, out in outputs.items():
            if out and not out.get("uri") and out.get("jobOutputType") in {"uri_folder", "uri_file",
                                                                           "custom_model", "mlflow_model"}:
                out["uri"] = (f"azureml://datastores/{config.DEFAULT_DATASTORE}/paths/azureml/{name}/{out_name}/")
        # No "default" output on purpose: with one, jobs.stream lists logs through the artifact datastore and
        # signs blob SAS tokens with the account key, which azure-storage-blob cannot use on a non-Azure host.
        # Without it the SDK streams run history's logFiles, and jobs.download falls back to the same
        # artifact-store path (workspaceartifactstore/ExperimentRun/dcid.<job>), where the double publishes logs.
        props["outputs"] = outputs
        return {"id": f"{ws_base(p)}/jobs/{name}", "name": name, "type": f"{PROVIDER}/workspaces/jobs",
                "properties": props, "systemData": system_data(job["created"], job["updated"])}

    IMMUTABLE_JOB_KEYS = ("jobType", "command", "codeId", "environmentId", "computeId", "inputs", "outputs",
                          "environmentVariables", "distribution", "resources", "limits")

    def put_job(self, req: Req) -> Response:
        check_workspace(req.params)
        name = req.params["name"]
        body = req.body or {}
        spec = body.get("properties") or {}
        existing = self.store.get_job(name)
        if existing is not None:
            old = existing["spec"]
            diff = [k for k in self.IMMUTABLE_JOB_KEYS if comparable(old.get(k)) != comparable(spec.get(k))]
            if diff:
                raise HttpError(409, "UserError",
                                f"Job {name!r} already exists with a different spec (differs in: "
                                f"{', '.join(diff)}); a job name identifies one run. Use another name.")
            # Same spec: the existing job is the answer; only display fields may change.
            merged = dict(old)
            for k in ("displayName", "description", "tags"):
                if spec.get(k) is not None:
                    merged[k] = spec[k]
            job = self.store.update_job(name, spec=merged)
            return JSONResponse(self.job_body(req.params, job), status_code=200)
        if spec.get("jobType") != "Command":
            raise HttpError(400, "UserError", f"Job {name!r}: this stack runs jobType Command only; got "
                                              f"{spec.get('jobType')!r}")
        runtime: dict[str, Any] = {"history": [["NotStarted", time.time()]]}
        if req.hold_s:
            runtime["hold_s"] = req.hold_s
        if req.epilogue:
            runtime["epilogue"] = req.epilogue
        job = self.store.create_job(name, spec, "NotStarted", runtime)
        self.runner.submit(name)
        job = self.store.get_job(name)
        return JSONResponse(self.job_body(req.params, job), status_code=201)

    def get_job(self, req: Req) -> dict:
        check_workspace(req.params)
        job = self.store.get_job(req.params["name"])
        if job is None:
            raise HttpError(404, "UserError", f"Job {req.params['name']!r} not found in workspace "
                                              f"{config.WORKSPACE}")
        return self.job_body(req.params, job)

    def list_jobs(self, req: Req) -> dict:
        check_workspace(req.params)
        jobs = self.store.list_jobs()
        view = req.query.get("listViewType", "ActiveOnly")
        items = [self.job_body(req.params, j) for j in jobs]
        items = [i for i in items if view_ok(view, i["properties"].get("isArchived"))]
        return {"value": items}

    def cancel_job(self, req: Req) -> Response:
        check_workspace(req.params)
        name = req.params["name"]
        job = self.store.get_job(name)
        if job is None:
            raise HttpError(404, "UserError", f"Job {name!r} not found")
        if job["status"] not in TERMINAL:
            self.runner.cancel(name)
        location = f"{self.endpoint}/_operations/cancel/{quote(name)}?api-version={req.query.get('api-version', '')}"
        return Response(status_code=202, headers={"Location": location, "Retry-After": "1"})

    def cancel_operation(self, req: Req) -> Response:
        job = self.store.get_job(req.params["name"])
        if job is None:
            raise HttpError(404, "UserError", f"Job {req.params['name']!r} not found")
        if job["status"] in TERMINAL:
            return Response(status_code=200)
        return Response(status_code=202, headers={"Location": req.headers.get("x-original-url", ""),
                                                  "Retry-After": "1"})

    # ------------------------------------------------------------------ run history
    def _job_or_404(self, name: str) -> dict:
        job = self.store.get_job(name)
        if job is None:
            raise HttpError(404, "UserError", f"Run {name!r} not found")
        return job

    def run_object(self, job: dict) -> dict:
        rt = job["runtime"]
        spec = job["spec"]
        err = None
        if job["status"] == "Failed":
            err = {"error": {"code": "UserError", "message": rt.get("error") or "the job failed",
                             "messageFormat": "", "details": [], "innerError": None,
                             "additionalInfo": [{"type": "ExitCode", "info": {"exitCode": rt.get("exit_code")}}]},
                   "correlation": {}, "environment": "local", "location": config.LOCATION,
                   "time": iso(rt.get("end"))}
        return {
            "runId": job["name"], "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, job["name"])),
            "status": job["status"], "displayName": spec.get("displayName", job["name"]),
            "experimentId": "00000000-0000-0000-0000-000000000001",
            "startTimeUtc": iso(rt.get("start")), "endTimeUtc": iso(rt.get("end")),
            "createdUtc": iso(job["created"]), "target": (spec.get("computeId") or "").rsplit("/", 1)[-1],
            "runType": "azureml.commandjob", "tags": spec.get("tags") or {},
            "properties": spec.get("properties") or {}, "error": err, "warnings": [],
            "outputs": {}, "inputs": {},
        }

    def run_details(self, req: Req) -> dict:
        check_workspace(req.params)
        job = self._job_or_404(req.params["name"])
        details = self.run_object(job)
        log_files = {}
        if self.runner.log_path(job["name"]).exists():
            log_files["user_logs/std_log.txt"] = self.file_url(job["name"], "user_logs/std_log.txt")
        details["logFiles"] = log_files
        details["services"] = {}
        return details

    def get_run(self, req: Req) -> dict:
        check_workspace(req.params)
        return self.run_object(self._job_or_404(req.params["name"]))

    def run_data(self, req: Req) -> dict:
        check_workspace(req.params)
        body = req.body or {}
        name = body.get("runId") or body.get("run_id") or ""
        job = self._job_or_404(name)
        return {"runMetadata": self.run_object(job), "inputDatasets": [], "outputDatasets": []}

    def run_children(self, req: Req) -> dict:
        check_workspace(req.params)
        self._job_or_404(req.params["name"])
        return {"value": [], "continuationToken": None}

    # ------------------------------------------------------------------ files (log URLs)
    def file_token(self, job: str, path: str) -> str:
        return hmac.new(self.double.files_secret, f"{job}/{path}".encode(), hashlib.sha256).hexdigest()[:32]

    def file_url(self, job: str, path: str) -> str:
        return f"{self.endpoint}/_files/{quote(job)}/{quote(path)}?sig={self.file_token(job, path)}"

    async def files(self, request: Request, path: str, query: dict[str, str]) -> Response:
        await request.body()  # the dispatcher reads every body past the studio pages; this one too
        parts = path[len("/_files/"):].split("/", 1)
        return await run_in_threadpool(self.serve_file, unquote(parts[0]),
                                       unquote(parts[1]) if len(parts) > 1 else "", query.get("sig", ""),
                                       request.headers.get("range"))

    def serve_file(self, job: str, path: str, sig: str, range_header: str | None = None) -> Response:
        if not hmac.compare_digest(sig, self.file_token(job, path)):
            return JSONResponse({"error": {"code": "AuthenticationFailed", "message": "bad signature"}},
                                status_code=403)
        local = self.runner.log_path(job) if path == "user_logs/std_log.txt" else None
        if local is None or not local.exists():
            return JSONResponse({"error": {"code": "NotFound", "message": f"{job}/{path} not found"}},
                                status_code=404)
        data = local.read_bytes()
        if range_header:
            return self.ranged(data, range_header)
        return Response(data, media_type="text/plain; charset=utf-8")

    @staticmethod
    def ranged(data: bytes, range_header: str) -> Response:
        """Answer a ``Range: bytes=<first>-[<last>]`` read as blob storage does: 206 with those bytes, or
        416 (no body) when the range starts at or past the end (a log that has not grown since)."""
        spec = range_header.strip().lower()
        first_text, _, last_text = spec.removeprefix("bytes=").partition("-")
        if not spec.startswith("bytes=") or not first_text.isdigit() or (last_text and not last_text.isdigit()):
            return JSONResponse({"error": {"code": "InvalidRange", "message": f"unsupported Range {range_header!r}: "
                                           "this double serves 'bytes=<first>-[<last>]'"}}, status_code=400)
        first = int(first_text)
        last = min(int(last_text), len(data) - 1) if last_text else len(data) - 1
        if first >= len(data) or last < first:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
        return Response(data[first:last + 1], status_code=206, media_type="text/plain; charset=utf-8",
                        headers={"Content-Range": f"bytes {first}-{last}/{len(data)}"})
