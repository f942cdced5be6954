"""Studio pages of the AML double: a small read-only HTML page per job or model version, where the
"open in studio" links (the job's Studio service endpoint, the operators' extra links) land. No bearer
token; counted in the request log as ``GET studio``."""

from __future__ import annotations

import json
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from devstack.aml.http_core import RouteFamily, iso


class StudioRoutes(RouteFamily):
    def register(self) -> None:
        # AML studio's own URL shapes too: /runs/<job>, /model/<name>:<version>/details
        self.double.mount(self.page, prefixes=("/studio/", "/model/", "/runs/"), record_as="GET studio")

    async def page(self, request: Request, path: str, query: dict[str, str]) -> Response:
        return await run_in_threadpool(self.studio, path)

    def studio(self, path: str) -> Response:
        """A small read-only page per job or model version, where "open in studio" links land."""
        import html

        parts = [unquote(p) for p in path.strip("/").split("/")]
        esc = html.escape
        # AML studio's own URL shapes: /runs/<job>, /model/<name>:<version>/details
        if len(parts) == 2 and parts[0] == "runs":
            parts = ["studio", "jobs", parts[1]]
        elif len(parts) >= 2 and parts[0] == "model" and ":" in parts[1]:
            model_name, _, model_version = parts[1].rpartition(":")
            parts = ["studio", "models", model_name, "versions", model_version]
        if len(parts) == 3 and parts[1] == "jobs":
            job = self.store.get_job(parts[2])
            if job is None:
                return Response(f"<h1>Job {esc(parts[2])} not found</h1>", status_code=404, media_type="text/html")
            rt, spec = job["runtime"], job["spec"]
            log_path = self.runner.log_path(job["name"])
            log_text = log_path.read_text(errors="replace")[-20000:] if log_path.exists() else ""
            rows = [("status", job["status"]), ("experiment", spec.get("experimentName") or "Default"),
                    ("compute", (spec.get("computeId") or "").rsplit("/", 1)[-1]),
                    ("environment", "/".join((spec.get("environmentId") or "").rsplit("/", 3)[-3::2])),
                    ("created", iso(job["created"])), ("started", iso(rt.get("start"))),
                    ("ended", iso(rt.get("end"))), ("error", rt.get("error") or ""),
                    ("command", spec.get("command") or "")]
            body = (f"<h1>Job {esc(job['name'])}</h1><table>"
                    + "".join(f"<tr><th align=left>{esc(k)}</th><td><pre>{esc(str(v))}</pre></td></tr>"
                              for k, v in rows)
                    + f"</table><h2>user_logs/std_log.txt</h2><pre>{esc(log_text)}</pre>")
            return Response(f"<html><body>{body}</body></html>", media_type="text/html")
        if len(parts) == 5 and parts[1] == "models" and parts[3] == "versions":
            rec = self.store.get_asset("model", parts[2], parts[4])
            if rec is None:
                return Response(f"<h1>Model {esc(parts[2])}:{esc(parts[4])} not found</h1>", status_code=404,
                                media_type="text/html")
            props = rec["body"].get("properties") or {}
            rows = [("path", props.get("modelUri")), ("type", props.get("modelType")),
                    ("tags", json.dumps(props.get("tags") or {})),
                    ("properties", json.dumps(props.get("properties") or {})),
                    ("archived", props.get("isArchived", False)), ("created", iso(rec["created"]))]
            body = (f"<h1>Model {esc(parts[2])} version {esc(parts[4])}</h1><table>"
                    + "".join(f"<tr><th align=left>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
                    + "</table>")
            return Response(f"<html><body>{body}</body></html>", media_type="text/html")
        return Response("<h1>Not found</h1><p>Pages: /studio/jobs/&lt;name&gt;, "
                        "/studio/models/&lt;name&gt;/versions/&lt;version&gt;</p>", status_code=404,
                        media_type="text/html")
