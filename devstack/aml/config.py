"""Fixed identities of the devstack workspace and the connection the double contributes to stack.env.

The values are the contract written in devstack/STACK.md (AIRFLOW_CONN_AZUREML_DEFAULT); keep them in sync.
"""

from __future__ import annotations

import json
from pathlib import Path

HOST = "management.local.azurestack.external"
PORT = 47143
ENDPOINT = f"https://{HOST}:{PORT}"

SUBSCRIPTION = "5f3c2a10-7e4b-4c1d-9a8e-0d6b1e2f3a41"
RESOURCE_GROUP = "edge-training-rg"
WORKSPACE = "edge-training-ws"
TENANT = "8e1f0c52-3b6a-4d7e-a9c4-2f5d6e7a8b90"
CLIENT_ID = "0c4e6a18-95d2-4b3f-8e71-6a2d9c0b1e53"
CLOUD_NAME = "EdgeDevStack"
LOCATION = "local"

COMPUTE = "edge-vm"
ENVIRONMENT = "edge-training-base:1"
BASE_IMAGE = "edge-training-base:bookworm"

# The AML workspace storage account (second Azurite) and the Stack Hub account (first Azurite).
AML_STORAGE_ACCOUNT = "amlworkspace"
AML_STORAGE_SUFFIX = "local.azurestack.external:47102"
STACKHUB_ACCOUNT = "edgedata"
STACKHUB_SUFFIX = "local.azurestack.external:47101"
STACKHUB_CONTAINER = "training"
STACKHUB_DATASTORE = "stackhub_data"
DEFAULT_DATASTORE = "workspaceblobstore"
ARTIFACT_DATASTORE = "workspaceartifactstore"
DEFAULT_CONTAINER = "azureml-blobstore"
ARTIFACT_CONTAINER = "azureml"


def cloud_metadata(endpoint: str = ENDPOINT, storage_suffix: str = AML_STORAGE_SUFFIX) -> dict[str, str]:
    """The six keys azure-ai-ml needs for a custom cloud, all pointing at the double."""
    base = endpoint.rstrip("/") + "/"
    return {
        "azure_portal": base,
        "resource_manager": base,
        "active_directory": base,
        "aml_resource_id": base,
        "storage_endpoint": storage_suffix,
        "registry_discovery_endpoint": base,
    }


def connection_extra(*, ca_file: Path | str, client_secret: str, endpoint: str = ENDPOINT) -> dict:
    """The `extra` of AIRFLOW_CONN_AZUREML_DEFAULT (see devstack/STACK.md). The secret is generated per stack."""
    return {
        "subscription_id": SUBSCRIPTION,
        "resource_group": RESOURCE_GROUP,
        "workspace_name": WORKSPACE,
        "tenant_id": TENANT,
        "auth_type": "service_principal",
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "cloud": "custom",
        "cloud_name": CLOUD_NAME,
        "cloud_metadata": cloud_metadata(endpoint),
        "ca_bundle": str(ca_file),
    }


def connection_json(*, ca_file: Path | str, client_secret: str, endpoint: str = ENDPOINT) -> str:
    extra = connection_extra(ca_file=ca_file, client_secret=client_secret, endpoint=endpoint)
    return json.dumps({"conn_type": "azureml", "extra": extra})
