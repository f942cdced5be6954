"""ARM resource routes of the AML double: service discovery, the workspace, computes and datastores
(``B/computes``, ``B/datastores``, ``listSecrets``)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from starlette.responses import Response

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
    ws_base,
)


class ArmRoutes(RouteFamily):
    def register(self) -> None:
        r = self.double.route
        B = WS_RE

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

    # ------------------------------------------------------------------ workspace
    def discovery(self, req: Req) -> dict:
        keys = ["api", "catalog", "experimentation", "gallery", "history", "hyperdrive", "labeling",
                "modelmanagement", "pipelines", "studio"]
        return {k: self.endpoint for k in keys}

    def workspace_body(self, p: dict) -> dict:
        base = ws_base(p)
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
        check_workspace(req.params)
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
        return {"id": f"{ws_base(p)}/computes/{name}", "name": name,
                "type": f"{PROVIDER}/workspaces/computes", "location": body.get("location", config.LOCATION),
                "properties": props, "systemData": system_data(rec["created"], rec["updated"])}

    def put_compute(self, req: Req) -> dict:
        check_workspace(req.params)
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
        check_workspace(req.params)
        rec = self.store.get_asset("compute", req.params["name"])
        if rec is None:
            raise HttpError(404, "ResourceNotFound", f"Compute {req.params['name']!r} not found in workspace "
                                                     f"{config.WORKSPACE}")
        return self.compute_body(req.params, req.params["name"], rec)

    def list_computes(self, req: Req) -> dict:
        check_workspace(req.params)
        return {"value": [self.compute_body(req.params, rec["name"], rec)
                          for rec in self.store.list_assets("compute")]}

    def delete_compute(self, req: Req) -> Response:
        check_workspace(req.params)
        self.store.delete_asset("compute", req.params["name"])
        return Response(status_code=200)

    # ------------------------------------------------------------------ datastores
    def datastore_body(self, p: dict, name: str, rec: dict) -> dict:
        body = json.loads(json.dumps(rec["body"]))
        props = body.setdefault("properties", {})
        creds = props.get("credentials") or {}
        creds.pop("secrets", None)
        props["isDefault"] = name == config.DEFAULT_DATASTORE
        return {"id": f"{ws_base(p)}/datastores/{name}", "name": name,
                "type": f"{PROVIDER}/workspaces/datastores", "properties": props,
                "systemData": system_data(rec["created"], rec["updated"])}

    def put_datastore(self, req: Req) -> dict:
        check_workspace(req.params)
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
        check_workspace(req.params)
        rec = self.store.get_asset("datastore", req.params["name"])
        if rec is None:
            raise HttpError(404, "UserError", f"Datastore {req.params['name']!r} not found in workspace "
                                              f"{config.WORKSPACE}")
        return self.datastore_body(req.params, req.params["name"], rec)

    def list_datastores(self, req: Req) -> dict:
        check_workspace(req.params)
        items = [self.datastore_body(req.params, rec["name"], rec) for rec in self.store.list_assets("datastore")]
        if req.query.get("isDefault", "").lower() == "true":
            items = [i for i in items if i["properties"]["isDefault"]]
        names = req.query.get("names")
        if names:
            wanted = set(names.split(","))
            items = [i for i in items if i["name"] in wanted]
        return {"value": items}

    def delete_datastore(self, req: Req) -> Response:
        check_workspace(req.params)
        if req.params["name"] in {config.DEFAULT_DATASTORE, config.ARTIFACT_DATASTORE}:
            raise HttpError(400, "UserError", f"Datastore {req.params['name']!r} is a workspace datastore and "
                                              "cannot be deleted")
        self.store.delete_asset("datastore", req.params["name"])
        return Response(status_code=200)

    def datastore_secrets(self, req: Req) -> dict:
        check_workspace(req.params)
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
