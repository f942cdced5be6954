"""Versioned asset routes of the AML double: codes, environments, models, data and components (containers
and versions), the code hash lookup and ``startPendingUpload`` (a fresh container + SAS on the workspace
storage)."""

from __future__ import annotations

import json
import re
import uuid

from starlette.responses import JSONResponse, Response

from devstack.aml import config
from devstack.aml.http_core import (
    PROVIDER,
    WS_RE,
    HttpError,
    Req,
    RouteFamily,
    check_workspace,
    system_data,
    view_ok,
    ws_base,
)


class AssetRoutes(RouteFamily):
    def register(self) -> None:
        r = self.double.route
        B = WS_RE

        for kind in ("codes", "environments", "models", "data", "components"):
            single = kind.rstrip("s") if kind != "data" else "data"
            r("GET", B + rf"/(?P<kind>{kind})", f"GET {kind}")(self.list_containers)
            r("GET", B + rf"/(?P<kind>{kind})/(?P<name>[^/]+)", f"GET {single} container")(self.get_container)
            r("PUT", B + rf"/(?P<kind>{kind})/(?P<name>[^/]+)", f"PUT {single} container")(self.put_container)
            r("GET", B + rf"/(?P<kind>{kind})/(?P<name>[^/]+)/versions", f"GET {single} versions")(
                self.list_versions)
            r("GET", B + rf"/(?P<kind>{kind})/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
              f"GET {single} version")(self.get_version)
            r("PUT", B + rf"/(?P<kind>{kind})/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
              f"PUT {single} version")(self.put_version)
            r("DELETE", B + rf"/(?P<kind>{kind})/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
              f"DELETE {single} version")(self.delete_version)
        r("POST", B + r"/codes/(?P<name>[^/]+)/versions/(?P<version>[^/]+)/startPendingUpload",
          "POST code startPendingUpload")(self.start_pending_upload)

    # ------------------------------------------------------------------ versioned assets
    KIND = {"codes": "code", "environments": "environment", "models": "model", "data": "data",
            "components": "component"}

    def version_body(self, p: dict, kind: str, name: str, version: str, rec: dict) -> dict:
        body = json.loads(json.dumps(rec["body"]))
        props = body.setdefault("properties", {})
        props.setdefault("isArchived", False)
        props.setdefault("isAnonymous", False)
        props.setdefault("tags", {})
        props.setdefault("properties", {})
        props["provisioningState"] = "Succeeded"
        if kind == "models":
            props.setdefault("flavors", {})
            if props.get("flavors") is None:
                props["flavors"] = {}
            props.setdefault("modelType", "custom_model")
        if kind == "environments":
            props.setdefault("environmentType", "UserCreated")
            props.setdefault("osType", "Linux")
            props.setdefault("autoRebuild", "Disabled")
        return {"id": f"{ws_base(p)}/{kind}/{name}/versions/{version}", "name": version,
                "type": f"{PROVIDER}/workspaces/{kind}/versions", "properties": props,
                "systemData": system_data(rec["created"], rec["updated"])}

    def next_version(self, kind: str, name: str) -> str:
        numbers = [int(v["version"]) for v in self.store.list_assets(self.KIND[kind], name)
                   if v["version"].isdigit()]
        return str(max(numbers, default=0) + 1)

    def container_body(self, p: dict, kind: str, name: str) -> dict | None:
        versions = self.store.list_assets(self.KIND[kind], name)
        container = self.store.get_asset(self.KIND[kind] + "-container", name)
        if not versions and container is None:
            return None
        created = min([v["created"] for v in versions] + ([container["created"]] if container else []))
        updated = max([v["updated"] for v in versions] + ([container["updated"]] if container else []))
        cprops = (container["body"].get("properties") if container else None) or {}
        latest = versions[-1]["version"] if versions else None
        props = {"description": cprops.get("description"), "tags": cprops.get("tags") or {},
                 "properties": cprops.get("properties") or {}, "isArchived": bool(cprops.get("isArchived")),
                 "latestVersion": latest, "nextVersion": self.next_version(kind, name),
                 "provisioningState": "Succeeded"}
        return {"id": f"{ws_base(p)}/{kind}/{name}", "name": name,
                "type": f"{PROVIDER}/workspaces/{kind}", "properties": props,
                "systemData": system_data(created, updated)}

    def list_containers(self, req: Req) -> dict:
        check_workspace(req.params)
        kind = req.params["kind"].lower()
        names = {v["name"] for v in self.store.list_assets(self.KIND[kind])}
        names |= {c["name"] for c in self.store.list_assets(self.KIND[kind] + "-container")}
        items = [self.container_body(req.params, kind, n) for n in sorted(names)]
        view = req.query.get("listViewType", "ActiveOnly")
        items = [i for i in items if i and view_ok(view, i["properties"].get("isArchived"))]
        return {"value": items}

    def get_container(self, req: Req) -> dict:
        check_workspace(req.params)
        kind = req.params["kind"].lower()
        body = self.container_body(req.params, kind, req.params["name"])
        if body is None:
            raise HttpError(404, "UserError", f"{self.KIND[kind].capitalize()} container "
                                              f"{req.params['name']!r} not found")
        return body

    def put_container(self, req: Req) -> dict:
        check_workspace(req.params)
        kind = req.params["kind"].lower()
        self.store.put_asset(self.KIND[kind] + "-container", req.params["name"], req.body or {})
        return self.container_body(req.params, kind, req.params["name"])  # type: ignore[return-value]

    def list_versions(self, req: Req) -> dict:
        check_workspace(req.params)
        kind = req.params["kind"].lower()
        name = req.params["name"]
        wanted_hash = req.query.get("hash")
        if kind == "codes" and wanted_hash:
            # AML answers a hash lookup from every code asset: anonymous code gets a fresh name per upload.
            recs = self.store.list_assets(self.KIND[kind])
        else:
            recs = self.store.list_assets(self.KIND[kind], name)
        items = [self.version_body(req.params, kind, r["name"], r["version"], r) for r in recs]
        items = [i for i in items if view_ok(req.query.get("listViewType", "ActiveOnly"),
                                                   i["properties"].get("isArchived"))]
        if wanted_hash:
            items = [i for i in items if (i["properties"].get("properties") or {}).get("hash_sha256") == wanted_hash
                     or i["properties"].get("contentHash") == wanted_hash]
        order = (req.query.get("$orderBy") or req.query.get("orderBy") or "").lower()
        if "createdtime desc" in order or "createdtime" not in order:
            items.reverse()
        top = req.query.get("$top") or req.query.get("top")
        if top:
            items = items[: int(top)]
        tags = req.query.get("tags")
        if tags:
            for cond in tags.split(","):
                k, _, v = cond.partition("=")
                items = [i for i in items
                         if k in i["properties"]["tags"] and (not v or i["properties"]["tags"][k] == v)]
        return {"value": items}

    def get_version(self, req: Req) -> dict:
        check_workspace(req.params)
        kind = req.params["kind"].lower()
        rec = self.store.get_asset(self.KIND[kind], req.params["name"], req.params["version"])
        if rec is None:
            raise HttpError(404, "UserError", f"{self.KIND[kind].capitalize()} {req.params['name']}:"
                                              f"{req.params['version']} not found in workspace {config.WORKSPACE}")
        return self.version_body(req.params, kind, req.params["name"], req.params["version"], rec)

    def put_version(self, req: Req) -> Response:
        check_workspace(req.params)
        kind = req.params["kind"].lower()
        name, version = req.params["name"], req.params["version"]
        body = req.body or {}
        props = body.get("properties") or {}
        existing = self.store.get_asset(self.KIND[kind], name, version)
        if kind == "environments":
            if not props.get("image") and not props.get("build"):
                raise HttpError(400, "UserError", f"Environment {name}:{version}: this stack needs an 'image' "
                                                  "(a docker image on the VM's docker)")
        if kind == "environments" and existing is not None:
            old = existing["body"].get("properties") or {}
            if props.get("image") != old.get("image"):
                raise HttpError(409, "UserError",
                                f"Environment {name}:{version} exists with image {old.get('image')!r}; an "
                                f"environment version is immutable (got image {props.get('image')!r}). "
                                "Use a new version.")
        if kind == "models" and props.get("modelUri"):
            props["modelUri"] = self.resolve_job_output_uri(req.params, props["modelUri"])
        if kind == "models" and existing is not None:
            # A model version is immutable apart from description, tags, stage and archiving.
            old = existing["body"].get("properties") or {}
            for key in ("modelUri", "modelType"):
                if props.get(key) and old.get(key) and props[key] != old[key]:
                    raise HttpError(409, "UserError",
                                    f"Model {name}:{version} exists with {key}={old[key]!r}; a version cannot "
                                    f"change its {key} (got {props[key]!r}). Use a new version.")
        if kind == "codes" and existing is not None:
            old = existing["body"].get("properties") or {}
            if props.get("codeUri") and old.get("codeUri") and props["codeUri"] != old["codeUri"]:
                raise HttpError(409, "UserError", f"Code {name}:{version} exists with another codeUri")
        rec = self.store.put_asset(self.KIND[kind], name, body, version)
        payload = self.version_body(req.params, kind, name, version, rec)
        return JSONResponse(payload, status_code=200 if existing else 201)

    JOB_OUTPUT = re.compile(r"^azureml://jobs/(?P<job>[^/]+)/outputs/(?P<out>[^/]+)(?:/paths/(?P<rest>.*))?/?$")
    DATASTORE_PATH = re.compile(r"^azureml://(?:.*/)?datastores/(?P<ds>[^/]+)/paths/(?P<path>.*)$")

    def resolve_job_output_uri(self, p: dict, uri: str) -> str:
        """azureml://jobs/<job>/outputs/<out> → the long-form datastore URI, as AML stores a model's path.

        Only for a job this workspace knows that declares the output; anything else is kept as sent.
        """
        m = self.JOB_OUTPUT.match(uri)
        if not m:
            return uri
        job = self.store.get_job(m.group("job"))
        outputs = (job or {}).get("spec", {}).get("outputs") or {}
        if job is None or m.group("out") not in outputs:
            return uri
        declared = (outputs[m.group("out")] or {}).get("uri") or ""
        dm = self.DATASTORE_PATH.match(declared)
        if dm:
            ds, path = dm.group("ds"), dm.group("path")
        else:
            ds, path = config.DEFAULT_DATASTORE, f"azureml/{job['name']}/{m.group('out')}/"
        if m.group("rest"):
            path = path.rstrip("/") + "/" + m.group("rest")
        return (f"azureml://subscriptions/{p['sub']}/resourcegroups/{p['rg']}/workspaces/{p['ws']}"
                f"/datastores/{ds}/paths/{path}")

    def delete_version(self, req: Req) -> Response:
        check_workspace(req.params)
        kind = req.params["kind"].lower()
        self.store.delete_asset(self.KIND[kind], req.params["name"], req.params["version"])
        return Response(status_code=200)

    def start_pending_upload(self, req: Req) -> dict:
        check_workspace(req.params)
        if self.storage is None:
            raise HttpError(503, "ServiceUnavailable", "the AML double has no workspace storage configured "
                                                       "(EDGE_AMLSTORE_CONNECTION_STRING)")
        blob_uri, sas_uri = self.storage.new_upload_container()
        return {
            "blobReferenceForConsumption": {
                "blobUri": blob_uri,
                "storageAccountArmId": f"/subscriptions/{req.params['sub']}/resourceGroups/{req.params['rg']}"
                                       f"/providers/Microsoft.Storage/storageAccounts/{self.storage.account}",
                "credential": {"credentialType": "SAS", "sasUri": sas_uri},
            },
            "pendingUploadId": str(uuid.uuid4()),
            "pendingUploadType": "TemporaryBlobReference",
        }
