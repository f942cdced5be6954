"""`stack-init` for docker-compose.yaml: generate the compose stack's secrets and Airflow connections.

    python -m devstack.compose_init /opt/devstack-secrets

Writes (once; a second run keeps what exists): the CA and server certificate, the edge VM's host and
client SSH keys, the registry's htpasswd, the two Azurite accounts, and `connections.json` for
Airflow's LocalFilesystemBackend with the same connection ids as the local stack. Hostnames are the
compose services' network aliases, so the connection shapes match the local stack and production.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import sys
from pathlib import Path

import bcrypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devstack.services.azurite import connection_string
from devstack.services.pki import make_ca, make_server

STACKHUB_ACCOUNT = "edgedata"
AML_ACCOUNT = "amlworkspace"
BLOB_PORT = 47101
REGISTRY = "edgeacr.azsacr.local.azurestack.external:47150"
REGISTRY_USER = "edgeacr"
VM_HOST = "edgevm.local.azurestack.external"
AML_ENDPOINT = "https://management.local.azurestack.external:47143"
CONNECTION_IDS = ("edge_vm_ssh", "stackhub_blob", "azureml_default", "acr_default", "docker_edge")


def _write(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def _once(path: Path, make) -> bytes:
    if not path.exists():
        _write(path, make())
    return path.read_bytes()


def _ssh_keypair(directory: Path, name: str) -> str:
    """An ed25519 key pair in OpenSSH format; returns the public key line."""
    private = directory / name
    if not private.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        _write(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        _write(directory / f"{name}.pub", public + "\n", 0o644)
    return (directory / f"{name}.pub").read_text().strip()


def init(out: Path) -> dict[str, dict]:
    now = dt.datetime.now(dt.timezone.utc)
    pki = out / "pki"
    if not (pki / "ca.crt").exists():
        ca_cert, ca_key = make_ca(now)
        _write(pki / "ca.key", ca_key)
        _write(pki / "ca.crt", ca_cert, 0o644)
    if not (pki / "server.crt").exists():
        cert, key = make_server((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes(), now)
        _write(pki / "server.key", key, 0o644)  # read by the non-root service users in the containers
        _write(pki / "server.crt", cert, 0o644)

    host_public = _ssh_keypair(out / "ssh", "ssh_host_ed25519_key")
    _ssh_keypair(out / "ssh", "edge_vm_key")

    password = _once(out / "registry" / "password", lambda: secrets.token_urlsafe(18)).decode()
    _once(out / "registry" / "htpasswd",
          lambda: f"{REGISTRY_USER}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")

    keys = {
        account: _once(out / "azurite" / f"{account}.key",
                       lambda: base64.b64encode(secrets.token_bytes(64)).decode()).decode()
        for account in (STACKHUB_ACCOUNT, AML_ACCOUNT)
    }
    _write(out / "azurite" / "accounts", ";".join(f"{a}:{k}" for a, k in keys.items()))

    ca_file = "/opt/devstack-secrets/pki/ca.crt"
    connections = {
        "edge_vm_ssh": {
            "conn_type": "ssh", "host": VM_HOST, "port": 22, "login": "edgeops",
            "extra": {"key_file": "/opt/devstack-secrets/ssh/edge_vm_key",
                      "host_key": host_public.split()[1], "no_host_key_check": False,
                      "allow_host_key_change": False, "conn_timeout": 10},
        },
        "stackhub_blob": {
            "conn_type": "wasb",
            "extra": {"connection_string": connection_string(STACKHUB_ACCOUNT, keys[STACKHUB_ACCOUNT], BLOB_PORT),
                      "api_version": "2019-07-07", "ca_bundle": ca_file,
                      "stack_hub_domain": "local.azurestack.external"},
        },
        "azureml_default": {
            "conn_type": "azureml",
            "extra": {"subscription_id": "5f3c2a10-7e4b-4c1d-9a8e-0d6b1e2f3a41",
                      "resource_group": "edge-training-rg", "workspace_name": "edge-training-ws",
                      "tenant_id": "8e1f0c52-3b6a-4d7e-a9c4-2f5d6e7a8b90",
                      "auth_type": "service_principal",
                      "client_id": "0c4e6a18-95d2-4b3f-8e71-6a2d9c0b1e53",
                      "client_secret": _once(out / "aml" / "client_secret",
                                             lambda: secrets.token_urlsafe(18)).decode(),
                      "cloud": "custom", "cloud_name": "EdgeComposeStack",
                      "cloud_metadata": {
                          "azure_portal": f"{AML_ENDPOINT}/", "resource_manager": f"{AML_ENDPOINT}/",
                          "active_directory": f"{AML_ENDPOINT}/", "aml_resource_id": f"{AML_ENDPOINT}/",
                          "storage_endpoint": f"local.azurestack.external:{BLOB_PORT}",
                          "registry_discovery_endpoint": f"{AML_ENDPOINT}/"},
                      "ca_bundle": ca_file},
        },
        "acr_default": {"conn_type": "azure_container_registry", "host": REGISTRY,
                        "login": REGISTRY_USER, "password": password},
        "docker_edge": {"conn_type": "generic", "host": f"tcp://{VM_HOST}:2375",
                        "extra": {"network_mode": "host"}},
    }
    _write(out / "connections.json", json.dumps(connections, indent=2), 0o644)
    return connections


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    init(Path(sys.argv[1]))
    print(f"stack-init: secrets and connections written to {sys.argv[1]}")
