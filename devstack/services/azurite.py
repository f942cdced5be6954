"""Azurite blob services: #1 the Stack Hub account `edgedata`, #2 the AML workspace storage `amlworkspace`.

Both serve HTTPS with the stack's server certificate and production-style URLs
(`https://<account>.blob.local.azurestack.external:<port>`): Azurite takes the account from the host
name, so clients build URLs exactly as they would against Stack Hub.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from devstack.base import Service, StackContext, StackError
from devstack.util import pid_alive, run, stack_secret

AZURITE_VERSION = "3.37.0"
STACK_HUB_DOMAIN = "local.azurestack.external"
STACK_HUB_API_VERSION = "2019-07-07"


def connection_string(account: str, key: str, port: int) -> str:
    return (f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};"
            f"EndpointSuffix={STACK_HUB_DOMAIN}:{port}")


def _new_account_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


def node_modules(ctx: StackContext) -> Path:
    return ctx.repo / "devstack" / "node_modules"


def ensure_azurite_installed(ctx: StackContext) -> None:
    """`npm ci` from devstack/package-lock.json when the pinned Azurite is missing."""
    pkg = node_modules(ctx) / "azurite" / "package.json"
    if pkg.exists() and f'"version": "{AZURITE_VERSION}"' in pkg.read_text():
        return
    print(f"azurite: installing azurite@{AZURITE_VERSION} with npm ci", flush=True)
    run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], what="azurite",
        cwd=ctx.repo / "devstack", timeout=900)
    if not pkg.exists():
        raise StackError(f"azurite: npm ci finished but {pkg} is missing")


class AzuriteService(Service):
    """One azurite-blob process serving one named account."""

    def __init__(self, *, name: str, account: str, port: int, env_prefix: str,
                 skip_api_version_check: bool = False) -> None:
        self.name = name
        self.account = account
        self.port = port
        self.ports = (port,)
        self.env_prefix = env_prefix
        self.skip_api_version_check = skip_api_version_check
        self.address = f"https://{account}.blob.{STACK_HUB_DOMAIN}:{port}"

    def key(self, ctx: StackContext) -> str:
        return stack_secret(ctx, f"azurite_{self.account}_key", _new_account_key)

    def connection_string(self, ctx: StackContext) -> str:
        return connection_string(self.account, self.key(ctx), self.port)

    def data_dir(self, ctx: StackContext) -> Path:
        return ctx.state / "azurite" / self.account

    def install(self, ctx: StackContext) -> None:
        ensure_azurite_installed(ctx)

    def start(self, ctx: StackContext) -> str:
        if ctx.running_pid(self.name):
            return f"{self.name}: already running at {self.address}"
        self.data_dir(ctx).mkdir(parents=True, exist_ok=True)
        argv = [
            str(node_modules(ctx) / ".bin" / "azurite-blob"),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
            "--location", str(self.data_dir(ctx)),
            "--cert", str(ctx.server_cert), "--key", str(ctx.server_key),
            "--disableTelemetry",
        ]
        if self.skip_api_version_check:
            argv.append("--skipApiVersionCheck")
        ctx.spawn(self.name, argv, env={"AZURITE_ACCOUNTS": f"{self.account}:{self.key(ctx)}"})
        return f"{self.name}: started at {self.address}"

    def is_alive(self, ctx: StackContext) -> bool:
        pid = ctx.running_pid(self.name)
        return pid is not None and pid_alive(pid)

    def client(self, ctx: StackContext, *, api_version: str = STACK_HUB_API_VERSION):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(
            self.connection_string(ctx), api_version=api_version, connection_verify=str(ctx.ca_file),
            retry_total=0, connection_timeout=3, read_timeout=5,
        )

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        if not self.is_alive(ctx):
            return False, "not running (no live pid in .devstack/run)"
        try:
            props = self.client(ctx).get_service_properties()
        except Exception as exc:  # noqa: BLE001 - report any failure as the reason
            return False, f"blob service at {self.address} did not answer: {type(exc).__name__}: " \
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        del props
        return True, f"account {self.account} answers at API {STACK_HUB_API_VERSION}"

    def env(self, ctx: StackContext) -> dict[str, str]:
        values = {
            f"{self.env_prefix}_CONNECTION_STRING": self.connection_string(ctx),
            f"{self.env_prefix}_ACCOUNT": self.account,
        }
        return values


class StackHubBlobService(AzuriteService):
    """Azurite #1: the on-premises training data, as Stack Hub serves it (API 2019-07-07 enforced)."""

    container = "training"

    def __init__(self) -> None:
        super().__init__(name="azurite-stackhub", account="edgedata", port=47101,
                         env_prefix="EDGE_STACKHUB")

    def env(self, ctx: StackContext) -> dict[str, str]:
        import json

        values = super().env(ctx)
        values["EDGE_STACKHUB_CONTAINER"] = self.container
        values["AIRFLOW_CONN_STACKHUB_BLOB"] = json.dumps({
            "conn_type": "wasb",
            "extra": {
                "connection_string": self.connection_string(ctx),
                "api_version": STACK_HUB_API_VERSION,
                "ca_bundle": str(ctx.ca_file),
                "stack_hub_domain": STACK_HUB_DOMAIN,
            },
        })
        return values

    def after_up(self, ctx: StackContext) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.client(ctx).create_container(self.container)
        except ResourceExistsError:
            pass


class AmlStorageService(AzuriteService):
    """Azurite #2: the AML workspace's default storage; the SDK writes to it at its newest API version."""

    def __init__(self) -> None:
        super().__init__(name="azurite-amlstore", account="amlworkspace", port=47102,
                         env_prefix="EDGE_AMLSTORE", skip_api_version_check=True)

    def env(self, ctx: StackContext) -> dict[str, str]:
        values = super().env(ctx)
        values["EDGE_AMLSTORE_KEY"] = self.key(ctx)
        return values
