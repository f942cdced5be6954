"""HTTP layer of the AML double: the ARM-style routes azure-ai-ml 1.35 calls, run history, a token
endpoint for service-principal credentials, and the admin routes (faults, request counters).

Every route here was confirmed against the SDK's own requests (tests/integration/test_aml_double_*.py drive
them with the real azure-ai-ml client). A route the double does not know answers 404 with the method and path, so a
new SDK call shows up in the log instead of passing silently.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote

from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack.aml import config
from devstack.aml.store import Store

log = logging.getLogger("aml-double")

TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}
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
                      command=str(spec.get("command") or ""))
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

    def pick(self, route_key: str, method: str, path: str) -> Fault | None:
        with self._lock:
            self.counts[route_key] += 1
            for fault in self.faults:
                if fault.count is not None and fault.hits >= fault.count:
                    continue
                if fault.route != route_key and not re.search(fault.route, f"{method} {path}"):
                    continue
                if random.random() >= fault.share:
                    continue
                fault.hits += 1
                return fault
        return None


class AmlDouble:
    """Routes and resource shapes. ``runner`` executes jobs (devstack.aml.runner.JobRunner)."""

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
        self._register()

    # ------------------------------------------------------------------ helpers
    def ws_base(self, p: dict) -> str:
        return (f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}/providers/{PROVIDER}"
                f"/workspaces/{p['ws']}")

    def check_workspace(self, p: dict) -> None:
        if p["ws"].lower() != config.WORKSPACE.lower() or p["rg"].lower() != config.RESOURCE_GROUP.lower() \
                or p["sub"].lower() != config.SUBSCRIPTION.lower():
            raise HttpError(404, "ResourceNotFound",
                            f"Workspace {p['sub']}/{p['rg']}/{p['ws']} not found: this double serves "
                            f"subscription {config.SUBSCRIPTION}, resource group {config.RESOURCE_GROUP}, "
                            f"workspace {config.WORKSPACE}")

    def file_token(self, job: str, path: str) -> str:
        return hmac.new(self.files_secret, f"{job}/{path}".encode(), hashlib.sha256).hexdigest()[:32]

    def file_url(self, job: str, path: str) -> str:
        return f"{self.endpoint}/_files/{quote(job)}/{quote(path)}?sig={self.file_token(job, path)}"

    def system_data(self, created: float, updated: float | None = None) -> dict:
        return {"createdAt": iso(created), "createdBy": config.CLIENT_ID, "createdByType": "Application",
                "lastModifiedAt": iso(updated or created), "lastModifiedBy": config.CLIENT_ID,
                "lastModifiedByType": "Application"}

    def route(self, method: str, pattern: str, key: str):
        def deco(fn):
            self.routes.append((method, re.compile(pattern + r"/?$", re.IGNORECASE), key, fn))
            return fn
        return deco

    # ------------------------------------------------------------------ routes
    def _register(self) -> None:  # noqa: C901 - one table of routes reads best in one place
        r = self.route
        B = WS_RE

        # identity: openid configuration and token endpoint for ClientSecretCredential
        r("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", "GET openid-configuration")(
            self.openid_configuration)
        r("GET", r"/(?P<tenant>[^/]+)/\.well-known/openid-configuration", "GET openid-configuration")(
            self.openid_configuration)
        r("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", "POST token")(self.token)
        r("POST", r"/(?P<tenant>[^/]+)/oauth2/token", "POST token")(self.token)

        r("GET", r"/discovery", "GET discovery")(self.discovery)
        r("GET", r"/discovery/workspaces/(?P<wsid>[^/]+)", "GET discovery")(self.discovery)

        r("GET", B, "GET workspace")(self.get_workspace)
        r("GET", r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
                 r"microsoft\.machinelearningservices/workspaces", "GET workspaces")(self.list_workspaces)

        r("GET", B + r"/computes", "GET computes")(self.list_computes)
        r("PUT", B + r"/computes/(?P<name>[^/]+)", "PUT compute")(self.put_compute)
        r("GET", B + r"/computes/(?P<name>[^/]+)", "GET compute")(self.get_compute)
        r("DELETE", B + r"/computes/(?P<name>[^/]+)", "DELETE compute")(self.delete_compute)

        r("GET", B + r"/datastores", "GET datastores")(self.list_datastores)
        r("PUT", B + r"/datastores/(?P<name>[^/]+)", "PUT datastore")(self.put_datastore)
        r("GET", B + r"/datastores/(?P<name>[^/]+)", "GET datastore")(self.get_datastore)
        r("DELETE", B + r"/datastores/(?P<name>[^/]+)", "DELETE datastore")(self.delete_datastore)
        r("POST", B + r"/datastores/(?P<name>[^/]+)/listSecrets", "POST datastore secrets")(self.datastore_secrets)

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

    # ------------------------------------------------------------------ identity
    def openid_configuration(self, req: Req) -> dict:
        base = f"{self.endpoint}/{req.params['tenant']}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "tenant_region_scope": "local",
            "response_types_supported": ["code", "id_token", "token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
        }

    def token(self, req: Req) -> Response:
        form = {k: v[0] for k, v in parse_qs(req.raw.decode()).items()}
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type",
                                 "error_description": "the AML double issues tokens for client_credentials "
                                                      f"only; got grant_type={form.get('grant_type')!r}"},
                                status_code=400)
        if client_id != config.CLIENT_ID or not hmac.compare_digest(form.get("client_secret", ""), self.client_secret):
            return JSONResponse({"error": "invalid_client",
                                 "error_description": f"AADSTS7000215: client {client_id!r} is unknown or its "
                                                      "secret is wrong (see AIRFLOW_CONN_AZUREML_DEFAULT)"},
                                status_code=401)
        now = int(time.time())
        claims = {"aud": form.get("scope", "").replace("/.default", ""), "iss": f"{self.endpoint}/"
                  f"{req.params['tenant']}/", "iat": now, "nbf": now, "exp": now + 3600,
                  "appid": client_id, "oid": client_id, "sub": client_id, "tid": req.params["tenant"],
                  "idtyp": "app", "ver": "1.0"}
        enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
        token = f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"
        return JSONResponse({"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
                             "access_token": token})

    # ------------------------------------------------------------------ workspace
    def discovery(self, req: Req) -> dict:
        keys = ["api", "catalog", "experimentation", "gallery", "history", "hyperdrive", "labeling",
                "modelmanagement", "pipelines", "studio"]
        return {k: self.endpoint for k in keys}

    def workspace_body(self, p: dict) -> dict:
        base = self.ws_base(p)
        sub_rg = f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}"
        return {
            "id": base, "name": config.WORKSPACE, "type": f"{PROVIDER}/workspaces",
            "location": config.LOCATION, "kind": "Default", "tags": {},
            "identity": {"type": "SystemAssigned"},
            "sku": {"name": "Basic", "tier": "Basic"},
            "properties": {
                "workspaceId": "6a6b3a47-6c2e-4b9a-8c55-0d1e2f3a4b5c",
                "friendlyName": config.WORKSPACE,
                "discoveryUrl": f"{self.endpoint}/discovery",
                "mlFlowTrackingUri": f"azureml://{config.LOCATION}.api.azureml.ms/mlflow/v1.0{base}",
                "storageAccount": f"{sub_rg}/providers/Microsoft.Storage/storageAccounts/"
                                  f"{config.AML_STORAGE_ACCOUNT}",
                "containerRegistry": f"{sub_rg}/providers/Microsoft.ContainerRegistry/registries/edgeacr",
                "keyVault": f"{sub_rg}/providers/Microsoft.KeyVault/vaults/edgekv",
                "applicationInsights": "",
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Disabled",
                "hbiWorkspace": False,
                "v1LegacyMode": False,
            },
        }

    def get_workspace(self, req: Req) -> dict:
        self.check_workspace(req.params)
        return self.workspace_body(req.params)

    def list_workspaces(self, req: Req) -> dict:
        p = {**req.params, "ws": config.WORKSPACE}
        if p["rg"].lower() != config.RESOURCE_GROUP.lower():
            return {"value": []}
        return {"value": [self.workspace_body(p)]}

    # ------------------------------------------------------------------ computes
    def compute_body(self, p: dict, name: str, rec: dict) -> dict:
        body = json.loads(json.dumps(rec["body"]))
        props = body.setdefault("properties", {})
        inner = props.get("properties") or {}
        account = inner.get("administratorAccount") or {}
        # Secrets never leave the double.
        for secret in ("password", "privateKeyData", "publicKeyData"):
            account.pop(secret, None)
        props.update({"provisioningState": "Succeeded", "createdOn": iso(rec["created"]),
                      "modifiedOn": iso(rec["updated"]), "isAttachedCompute": True,
                      "provisioningErrors": None})
        return {"id": f"{self.ws_base(p)}/computes/{name}", "name": name,
                "type": f"{PROVIDER}/workspaces/computes", "location": body.get("location", config.LOCATION),
                "properties": props, "systemData": self.system_data(rec["created"], rec["updated"])}

    def put_compute(self, req: Req) -> dict:
        self.check_workspace(req.params)
        name = req.params["name"]
        body = req.body or {}
        ctype = (body.get("properties") or {}).get("computeType")
        if ctype not in {"VirtualMachine", "Kubernetes"}:
            raise HttpError(400, "UserError",
                            f"Compute {name!r}: this stack supports computeType VirtualMachine or Kubernetes; "
                            f"got {ctype!r}")
        if ctype == "VirtualMachine":
            inner = body["properties"].get("properties") or {}
            account = inner.get("administratorAccount") or {}
            if not account.get("username") or not (account.get("privateKeyData") or account.get("password")):
                raise HttpError(400, "UserError",
                                f"Compute {name!r}: a VirtualMachine compute needs ssh settings with "
                                "administratorAccount.username and privateKeyData (or password)")
            existing = self.store.get_asset("compute", name)
            if existing and not account.get("privateKeyData") and not account.get("password"):
                account.update((existing["body"]["properties"]["properties"] or {}).get("administratorAccount"))
        rec = self.store.put_asset("compute", name, body)
        return self.compute_body(req.params, name, rec)

    def get_compute(self, req: Req) -> dict:
        self.check_workspace(req.params)
        rec = self.store.get_asset("compute", req.params["name"])
        if rec is None:
            raise HttpError(404, "ResourceNotFound", f"Compute {req.params['name']!r} not found in workspace "
                                                     f"{config.WORKSPACE}")
        return self.compute_body(req.params, req.params["name"], rec)

    def list_computes(self, req: Req) -> dict:
        self.check_workspace(req.params)
        return {"value": [self.compute_body(req.params, rec["name"], rec)
                          for rec in self.store.list_assets("compute")]}

    def delete_compute(self, req: Req) -> Response:
        self.check_workspace(req.params)
        self.store.delete_asset("compute", req.params["name"])
        return Response(status_code=200)

    # ------------------------------------------------------------------ datastores
    def datastore_body(self, p: dict, name: str, rec: dict) -> dict:
        body = json.loads(json.dumps(rec["body"]))
        props = body.setdefault("properties", {})
        creds = props.get("credentials") or {}
        creds.pop("secrets", None)
        props["isDefault"] = name == config.DEFAULT_DATASTORE
        return {"id": f"{self.ws_base(p)}/datastores/{name}", "name": name,
                "type": f"{PROVIDER}/workspaces/datastores", "properties": props,
                "systemData": self.system_data(rec["created"], rec["updated"])}

    def put_datastore(self, req: Req) -> dict:
        self.check_workspace(req.params)
        name = req.params["name"]
        body = req.body or {}
        props = body.get("properties") or {}
        if props.get("datastoreType") != "AzureBlob":
            raise HttpError(400, "UserError", f"Datastore {name!r}: this stack supports datastoreType AzureBlob; "
                                              f"got {props.get('datastoreType')!r}")
        creds = props.get("credentials") or {}
        if not (creds.get("secrets") or {}).get("key") and creds.get("credentialsType") == "AccountKey":
            existing = self.store.get_asset("datastore", name)
            if existing:
                creds["secrets"] = existing["body"]["properties"]["credentials"].get("secrets")
        rec = self.store.put_asset("datastore", name, body)
        return self.datastore_body(req.params, name, rec)

    def get_datastore(self, req: Req) -> dict:
        self.check_workspace(req.params)
        rec = self.store.get_asset("datastore", req.params["name"])
        if rec is None:
            raise HttpError(404, "UserError", f"Datastore {req.params['name']!r} not found in workspace "
                                              f"{config.WORKSPACE}")
        return self.datastore_body(req.params, req.params["name"], rec)

    def list_datastores(self, req: Req) -> dict:
        self.check_workspace(req.params)
        items = [self.datastore_body(req.params, rec["name"], rec) for rec in self.store.list_assets("datastore")]
        if req.query.get("isDefault", "").lower() == "true":
            items = [i for i in items if i["properties"]["isDefault"]]
        names = req.query.get("names")
        if names:
            wanted = set(names.split(","))
            items = [i for i in items if i["name"] in wanted]
        return {"value": items}

    def delete_datastore(self, req: Req) -> Response:
        self.check_workspace(req.params)
        if req.params["name"] in {config.DEFAULT_DATASTORE, config.ARTIFACT_DATASTORE}:
            raise HttpError(400, "UserError", f"Datastore {req.params['name']!r} is a workspace datastore and "
                                              "cannot be deleted")
        self.store.delete_asset("datastore", req.params["name"])
        return Response(status_code=200)

    def datastore_secrets(self, req: Req) -> dict:
        self.check_workspace(req.params)
        rec = self.store.get_asset("datastore", req.params["name"])
        if rec is None:
            raise HttpError(404, "UserError", f"Datastore {req.params['name']!r} not found")
        creds = rec["body"]["properties"].get("credentials") or {}
        key = (creds.get("secrets") or {}).get("key")
        if not key:
            raise HttpError(400, "UserError", f"Datastore {req.params['name']!r} has no account key")
        # A SAS, not the key: azure-storage-blob cannot derive the account name from a non-core.windows.net
        # host (…blob.local.azurestack.external:47102), so the SDK's storage clients only work with a SAS there.
        props = rec["body"]["properties"]
        sas = generate_container_sas(
            account_name=props["accountName"], container_name=props["containerName"], account_key=key,
            permission=ContainerSasPermissions(read=True, write=True, list=True, create=True, add=True),
            expiry=datetime.now(timezone.utc) + timedelta(hours=8))
        return {"secretsType": "Sas", "sasToken": sas}

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
        return {"id": f"{self.ws_base(p)}/{kind}/{name}/versions/{version}", "name": version,
                "type": f"{PROVIDER}/workspaces/{kind}/versions", "properties": props,
                "systemData": self.system_data(rec["created"], rec["updated"])}

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
        return {"id": f"{self.ws_base(p)}/{kind}/{name}", "name": name,
                "type": f"{PROVIDER}/workspaces/{kind}", "properties": props,
                "systemData": self.system_data(created, updated)}

    def list_containers(self, req: Req) -> dict:
        self.check_workspace(req.params)
        kind = req.params["kind"].lower()
        names = {v["name"] for v in self.store.list_assets(self.KIND[kind])}
        names |= {c["name"] for c in self.store.list_assets(self.KIND[kind] + "-container")}
        items = [self.container_body(req.params, kind, n) for n in sorted(names)]
        view = req.query.get("listViewType", "ActiveOnly")
        items = [i for i in items if i and self._view_ok(view, i["properties"].get("isArchived"))]
        return {"value": items}

    def get_container(self, req: Req) -> dict:
        self.check_workspace(req.params)
        kind = req.params["kind"].lower()
        body = self.container_body(req.params, kind, req.params["name"])
        if body is None:
            raise HttpError(404, "UserError", f"{self.KIND[kind].capitalize()} container "
                                              f"{req.params['name']!r} not found")
        return body

    def put_container(self, req: Req) -> dict:
        self.check_workspace(req.params)
        kind = req.params["kind"].lower()
        self.store.put_asset(self.KIND[kind] + "-container", req.params["name"], req.body or {})
        return self.container_body(req.params, kind, req.params["name"])  # type: ignore[return-value]

    @staticmethod
    def _view_ok(view: str, archived: Any) -> bool:
        view = (view or "ActiveOnly").lower()
        if view == "all":
            return True
        if view == "archivedonly":
            return bool(archived)
        return not archived

    def list_versions(self, req: Req) -> dict:
        self.check_workspace(req.params)
        kind = req.params["kind"].lower()
        name = req.params["name"]
        wanted_hash = req.query.get("hash")
        if kind == "codes" and wanted_hash:
            # AML answers a hash lookup from every code asset: anonymous code gets a fresh name per upload.
            recs = self.store.list_assets(self.KIND[kind])
        else:
            recs = self.store.list_assets(self.KIND[kind], name)
        items = [self.version_body(req.params, kind, r["name"], r["version"], r) for r in recs]
        items = [i for i in items if self._view_ok(req.query.get("listViewType", "ActiveOnly"),
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
        self.check_workspace(req.params)
        kind = req.params["kind"].lower()
        rec = self.store.get_asset(self.KIND[kind], req.params["name"], req.params["version"])
        if rec is None:
            raise HttpError(404, "UserError", f"{self.KIND[kind].capitalize()} {req.params['name']}:"
                                              f"{req.params['version']} not found in workspace {config.WORKSPACE}")
        return self.version_body(req.params, kind, req.params["name"], req.params["version"], rec)

    def put_version(self, req: Req) -> Response:
        self.check_workspace(req.params)
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
        self.check_workspace(req.params)
        kind = req.params["kind"].lower()
        self.store.delete_asset(self.KIND[kind], req.params["name"], req.params["version"])
        return Response(status_code=200)

    def start_pending_upload(self, req: Req) -> dict:
        self.check_workspace(req.params)
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
                       "endpoint": f"{self.endpoint}/studio/jobs/{quote(name)}?wsid={quote(self.ws_base(p))}"},
            "Tracking": {"jobServiceType": "Tracking",
                         "endpoint": f"azureml://{config.LOCATION}.api.azureml.ms/mlflow/v1.0{self.ws_base(p)}"},
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
        return {"id": f"{self.ws_base(p)}/jobs/{name}", "name": name, "type": f"{PROVIDER}/workspaces/jobs",
                "properties": props, "systemData": self.system_data(job["created"], job["updated"])}

    IMMUTABLE_JOB_KEYS = ("jobType", "command", "codeId", "environmentId", "computeId", "inputs", "outputs",
                          "environmentVariables", "distribution", "resources", "limits")

    def put_job(self, req: Req) -> Response:
        self.check_workspace(req.params)
        name = req.params["name"]
        body = req.body or {}
        spec = body.get("properties") or {}
        existing = self.store.get_job(name)
        if existing is not None:
            old = existing["spec"]
            diff = [k for k in self.IMMUTABLE_JOB_KEYS if self._norm(old.get(k)) != self._norm(spec.get(k))]
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

    @staticmethod
    def _norm(value: Any) -> Any:
        if value in (None, {}, []):
            return None
        if isinstance(value, dict):
            cleaned = {k: AmlDouble._norm(v) for k, v in sorted(value.items()) if AmlDouble._norm(v) is not None}
            return cleaned or None
        return value

    def get_job(self, req: Req) -> dict:
        self.check_workspace(req.params)
        job = self.store.get_job(req.params["name"])
        if job is None:
            raise HttpError(404, "UserError", f"Job {req.params['name']!r} not found in workspace "
                                              f"{config.WORKSPACE}")
        return self.job_body(req.params, job)

    def list_jobs(self, req: Req) -> dict:
        self.check_workspace(req.params)
        jobs = self.store.list_jobs()
        view = req.query.get("listViewType", "ActiveOnly")
        items = [self.job_body(req.params, j) for j in jobs]
        items = [i for i in items if self._view_ok(view, i["properties"].get("isArchived"))]
        return {"value": items}

    def cancel_job(self, req: Req) -> Response:
        self.check_workspace(req.params)
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
        self.check_workspace(req.params)
        job = self._job_or_404(req.params["name"])
        details = self.run_object(job)
        log_files = {}
        if self.runner.log_path(job["name"]).exists():
            log_files["user_logs/std_log.txt"] = self.file_url(job["name"], "user_logs/std_log.txt")
        details["logFiles"] = log_files
        details["services"] = {}
        return details

    def get_run(self, req: Req) -> dict:
        self.check_workspace(req.params)
        return self.run_object(self._job_or_404(req.params["name"]))

    def run_data(self, req: Req) -> dict:
        self.check_workspace(req.params)
        body = req.body or {}
        name = body.get("runId") or body.get("run_id") or ""
        job = self._job_or_404(name)
        return {"runMetadata": self.run_object(job), "inputDatasets": [], "outputDatasets": []}

    def run_children(self, req: Req) -> dict:
        self.check_workspace(req.params)
        self._job_or_404(req.params["name"])
        return {"value": [], "continuationToken": None}

    # ------------------------------------------------------------------ files (log URLs)
    def serve_file(self, job: str, path: str, sig: str) -> Response:
        if not hmac.compare_digest(sig, self.file_token(job, path)):
            return JSONResponse({"error": {"code": "AuthenticationFailed", "message": "bad signature"}},
                                status_code=403)
        local = self.runner.log_path(job) if path == "user_logs/std_log.txt" else None
        if local is None or not local.exists():
            return JSONResponse({"error": {"code": "NotFound", "message": f"{job}/{path} not found"}},
                                status_code=404)
        return Response(local.read_bytes(), media_type="text/plain; charset=utf-8")

    # ------------------------------------------------------------------ studio pages (extra links)
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

    # ------------------------------------------------------------------ dispatch
    async def dispatch(self, request: Request) -> Response:
        started = time.monotonic()
        method = request.method
        path = request.url.path
        query = {k: v for k, v in request.query_params.items()}
        api_version = query.get("api-version", "")
        if path == "/healthz":
            return JSONResponse({"status": "ok", "service": "aml-double", "jobs_running":
                                 self.runner.active_count()})
        if path.startswith("/_admin/"):
            return await self.admin(request, path)
        if path.startswith(("/studio/", "/model/", "/runs/")):
            resp = await run_in_threadpool(self.studio, path)
            self._record(method, path, api_version, "GET studio", resp.status_code, started)
            return resp
        raw = await request.body()
        if path.startswith("/_files/"):
            parts = path[len("/_files/"):].split("/", 1)
            resp = await run_in_threadpool(self.serve_file, unquote(parts[0]),
                                           unquote(parts[1]) if len(parts) > 1 else "", query.get("sig", ""))
            self._record(method, path, api_version, "GET file", resp.status_code, started)
            return resp

        handler, key, params = None, f"{method} unknown", {}
        for m, pattern, route_key, fn in self.routes:
            if m != method:
                continue
            match = pattern.match(path)
            if match:
                handler, key, params = fn, route_key, match.groupdict()
                break

        fault = self.faults.pick(key, method, path)
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
        if key.endswith("unknown") or status >= 400:
            log.info("%s %s api-version=%s -> %s (%s)%s", method, short, api_version, status, key,
                     f" injected {injected}" if injected else "")
        else:
            log.debug("%s %s api-version=%s -> %s (%s)", method, short, api_version, status, key)

    async def admin(self, request: Request, path: str) -> Response:
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
                return JSONResponse({"counts": dict(self.faults.counts), "recent": list(self.faults.recent)})
            if method == "DELETE":
                self.faults.reset_counts()
                return JSONResponse({"counts": {}})
        return JSONResponse({"error": {"code": "NoSuchRoute", "message": f"{method} {path}"}}, status_code=404)


def build_app(double: AmlDouble) -> Starlette:
    methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"]
    return Starlette(routes=[Route("/{rest:path}", double.dispatch, methods=methods)])
