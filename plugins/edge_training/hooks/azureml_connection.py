"""The ``azureml`` connection: its form in the UI and its parsing into workspace, credential and cloud settings.

Kept apart from the hook so provider info can read the form (``CONNECTION_TYPE``) and the parsing can be
tested without the SDK; the hook only turns an ``AzureMLConnectionConfig`` into a credential and an MLClient.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_training.exceptions import AzureMLConnectionError

CONN_TYPE = "azureml"

# --- clouds --------------------------------------------------------------------------------------
#: Spellings accepted for the public and sovereign clouds, mapped to the SDK's cloud names.
KNOWN_CLOUDS = {
    "public": "AzureCloud",
    "azurecloud": "AzureCloud",
    "china": "AzureChinaCloud",
    "azurechinacloud": "AzureChinaCloud",
    "usgov": "AzureUSGovernment",
    "usgovernment": "AzureUSGovernment",
    "azureusgovernment": "AzureUSGovernment",
}
_AUTHORITY_HOSTS = {
    "AzureCloud": "login.microsoftonline.com",
    "AzureChinaCloud": "login.chinacloudapi.cn",
    "AzureUSGovernment": "login.microsoftonline.us",
}
CUSTOM_CLOUD_KEYS = (
    "azure_portal",
    "resource_manager",
    "active_directory",
    "aml_resource_id",
    "storage_endpoint",
    "registry_discovery_endpoint",
)
AUTH_TYPES = ("service_principal", "managed_identity", "workload_identity", "default")

#: provider-info entry (``connection-types``) so the UI shows the azureml form without importing this module.
CONNECTION_TYPE: dict[str, Any] = {
    "hook-class-name": "edge_training.hooks.azureml.AzureMLHook",
    "hook-name": "Azure Machine Learning (edge training)",
    "connection-type": CONN_TYPE,
    "conn-fields": {
        "subscription_id": {"label": "Subscription ID", "schema": {"type": ["string", "null"]}},
        "resource_group": {"label": "Resource group", "schema": {"type": ["string", "null"]}},
        "workspace_name": {"label": "Workspace name", "schema": {"type": ["string", "null"]}},
        "tenant_id": {"label": "Tenant ID", "schema": {"type": ["string", "null"]}},
        "auth_type": {
            "label": "Authentication",
            "schema": {"type": ["string", "null"], "default": "service_principal", "enum": list(AUTH_TYPES)},
            "description": "service_principal uses Client ID/secret (login/password); managed_identity and "
            "workload_identity use the host's identity; default is DefaultAzureCredential.",
        },
        "cloud": {
            "label": "Cloud",
            "schema": {"type": ["string", "null"], "default": "public"},
            "description": "public, china, usgov, or custom (then fill Cloud metadata).",
        },
        "cloud_name": {
            "label": "Custom cloud name",
            "schema": {"type": ["string", "null"]},
            "description": "A readable prefix; the hook makes it unique per endpoint.",
        },
        "cloud_metadata": {
            "label": "Cloud metadata (JSON)",
            "schema": {"type": ["string", "object", "null"]},
            "description": "For a custom cloud: " + ", ".join(CUSTOM_CLOUD_KEYS) + ".",
        },
        "ca_bundle": {
            "label": "CA bundle path",
            "schema": {"type": ["string", "null"]},
            "description": "PEM file that signs the AML endpoint's certificate (Azure Stack Hub, private CA).",
        },
        "federated_token_file": {
            "label": "Federated token file",
            "schema": {"type": ["string", "null"]},
            "description": "workload_identity only; defaults to $AZURE_FEDERATED_TOKEN_FILE.",
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port", "host"],
        "relabeling": {"login": "Client ID", "password": "Client secret"},
        "placeholders": {
            "login": "service principal or managed identity client ID",
            "password": "service principal secret",
            "subscription_id": "00000000-0000-0000-0000-000000000000",
            "workspace_name": "my-workspace",
            "cloud_metadata": '{"resource_manager": "https://management.local.azurestack.external", ...}',
        },
    },
}


# --- connection parsing (pure) -------------------------------------------------------------------
@dataclass(frozen=True)
class AzureMLConnectionConfig:
    """What the hook needs from an ``azureml`` connection. ``client_secret`` is excluded from repr."""

    subscription_id: str
    resource_group: str
    workspace_name: str
    auth_type: str
    cloud: str
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    cloud_metadata: dict[str, str] | None = None
    ca_bundle: str | None = None
    federated_token_file: str | None = None

    @property
    def is_custom_cloud(self) -> bool:
        return self.cloud_metadata is not None

    @property
    def authority(self) -> str | None:
        """The AAD/ADFS authority the credential talks to (None: azure-identity's public default)."""
        if self.cloud_metadata is not None:
            return self.cloud_metadata["active_directory"]
        if self.cloud == "AzureCloud":
            return None
        return _AUTHORITY_HOSTS[self.cloud]


def _extra_value(extra: Mapping[str, Any], key: str) -> Any:
    """Read a field as stored by the UI form (``extra__azureml__key``) or by hand (``key``)."""
    value = extra.get(key)
    if value in (None, ""):
        value = extra.get(f"extra__{CONN_TYPE}__{key}")
    return None if value == "" else value


def custom_cloud_name(prefix: str | None, metadata: Mapping[str, str]) -> str:
    """A cloud name unique to these endpoints.

    azure-ai-ml registers a custom cloud once per process under its name and silently ignores a
    second registration with other endpoints, so two connections sharing a name would talk to
    whichever registered first. Hashing the metadata into the name rules that out.
    """
    digest = hashlib.sha256(json.dumps(dict(metadata), sort_keys=True).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9]+", "", prefix or "") or "EdgeCustomCloud"
    return f"{stem}{digest}"


def parse_connection(
    conn_id: str, *, extra: Mapping[str, Any], login: str | None = None, password: str | None = None
) -> AzureMLConnectionConfig:
    """Validate an ``azureml`` connection's fields; errors name the connection and the field."""

    def need(key: str) -> str:
        value = _extra_value(extra, key)
        if not value:
            raise AzureMLConnectionError(f"Connection {conn_id!r}: extra field {key!r} is required but empty")
        return str(value)

    auth_type = str(_extra_value(extra, "auth_type") or "service_principal").lower()
    if auth_type not in AUTH_TYPES:
        raise AzureMLConnectionError(
            f"Connection {conn_id!r}: auth_type must be one of {', '.join(AUTH_TYPES)}, found {auth_type!r}"
        )
    client_id = login or _extra_value(extra, "client_id")
    client_secret = password or _extra_value(extra, "client_secret")
    tenant_id = _extra_value(extra, "tenant_id")
    if auth_type == "service_principal" and not (tenant_id and client_id and client_secret):
        required = (("tenant_id", tenant_id), ("client_id", client_id), ("client_secret", client_secret))
        missing = [n for n, v in required if not v]
        raise AzureMLConnectionError(
            f"Connection {conn_id!r}: auth_type service_principal needs tenant_id, client_id (login) and "
            f"client_secret (password); missing: {', '.join(missing)}"
        )
    if auth_type == "workload_identity" and not tenant_id:
        raise AzureMLConnectionError(f"Connection {conn_id!r}: auth_type workload_identity needs tenant_id")

    raw_cloud = str(_extra_value(extra, "cloud") or "public")
    metadata_raw = _extra_value(extra, "cloud_metadata")
    cloud_metadata: dict[str, str] | None = None
    if raw_cloud.lower() == "custom" or metadata_raw:
        if isinstance(metadata_raw, str):
            try:
                metadata_raw = json.loads(metadata_raw)
            except json.JSONDecodeError as err:
                raise AzureMLConnectionError(
                    f"Connection {conn_id!r}: cloud_metadata must be a JSON object, found unparsable text ({err})"
                ) from err
        if not isinstance(metadata_raw, Mapping):
            raise AzureMLConnectionError(
                f"Connection {conn_id!r}: cloud 'custom' needs cloud_metadata with keys "
                f"{', '.join(CUSTOM_CLOUD_KEYS)}; found {type(metadata_raw).__name__}"
            )
        missing = [k for k in CUSTOM_CLOUD_KEYS if not metadata_raw.get(k)]
        if missing:
            raise AzureMLConnectionError(
                f"Connection {conn_id!r}: cloud_metadata lacks {', '.join(missing)} "
                f"(a custom cloud needs all of {', '.join(CUSTOM_CLOUD_KEYS)})"
            )
        cloud_metadata = {k: str(metadata_raw[k]) for k in CUSTOM_CLOUD_KEYS}
        cloud = custom_cloud_name(_extra_value(extra, "cloud_name"), cloud_metadata)
    else:
        cloud = KNOWN_CLOUDS.get(raw_cloud.lower().replace("_", "").replace("-", ""))
        if cloud is None:
            raise AzureMLConnectionError(
                f"Connection {conn_id!r}: cloud must be public, china, usgov or custom, found {raw_cloud!r}"
            )

    return AzureMLConnectionConfig(
        subscription_id=need("subscription_id"),
        resource_group=need("resource_group"),
        workspace_name=need("workspace_name"),
        auth_type=auth_type,
        cloud=cloud,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        cloud_metadata=cloud_metadata,
        ca_bundle=_extra_value(extra, "ca_bundle"),
        federated_token_file=_extra_value(extra, "federated_token_file"),
    )
