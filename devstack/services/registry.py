"""The ACR stand-in: Debian's docker-registry (distribution 2.8) on 127.0.0.1:47150, TLS + htpasswd.

dockerd trusts the stack CA for exactly this registry through
/etc/docker/certs.d/<host>:<port>/ca.crt, so pushes verify TLS as they would against ACR.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from devstack.base import Service, StackContext, StackError
from devstack.util import apt_install, pid_alive, run, stack_secret, token, write_private

HOST = "edgeacr.azsacr.local.azurestack.external"
PORT = 47150
REGISTRY = f"{HOST}:{PORT}"
USER = "edgeacr"
BINARY = "/usr/bin/docker-registry"
DOCKER_CERTS_D = Path("/etc/docker/certs.d")


def registry_config(*, data_dir: Path, cert: Path, key: Path, htpasswd: Path, secret: str) -> str:
    # JSON is valid YAML: no YAML library needed to write it.
    return json.dumps({
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(data_dir)}, "delete": {"enabled": True}},
        "http": {
            "addr": f"127.0.0.1:{PORT}",
            "host": f"https://{REGISTRY}",
            "secret": secret,
            "tls": {"certificate": str(cert), "key": str(key)},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {"htpasswd": {"realm": "edgeacr", "path": str(htpasswd)}},
    }, indent=2) + "\n"


def manifest_config_digest(ca_file: Path, auth: tuple[str, str], repository: str, tag: str) -> str | None:
    """The config digest (= local image id) of repository:tag in the registry, None when absent."""
    req = urllib.request.Request(f"https://{REGISTRY}/v2/{repository}/manifests/{tag}")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return json.loads(resp.read()).get("config", {}).get("digest")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def probe(ca_file: Path, auth: tuple[str, str] | None = None) -> int:
    """HTTP status of GET /v2/ (401 without credentials, 200 with the right ones)."""
    req = urllib.request.Request(f"https://{REGISTRY}/v2/")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class RegistryService(Service):
    name = "registry"
    address = f"https://{REGISTRY}"
    ports = (PORT,)

    def dir(self, ctx: StackContext) -> Path:
        return ctx.state / "registry"

    def password(self, ctx: StackContext) -> str:
        return stack_secret(ctx, "registry_password", lambda: token(18))

    def install(self, ctx: StackContext) -> None:
        if not Path(BINARY).exists():
            apt_install(["docker-registry"], what=self.name)
        if shutil.which("htpasswd") is None:
            apt_install(["apache2-utils"], what=self.name)
        d = self.dir(ctx)
        (d / "data").mkdir(parents=True, exist_ok=True)
        htpasswd = d / "htpasswd"
        password = self.password(ctx)
        check = run(["htpasswd", "-vb", str(htpasswd), USER, password], what=self.name, check=False) \
            if htpasswd.exists() else None
        if check is None or check.returncode != 0:
            line = run(["htpasswd", "-Bbn", USER, password], what=self.name).stdout
            write_private(htpasswd, line, mode=0o644)
        config = registry_config(data_dir=d / "data", cert=ctx.server_cert, key=ctx.server_key,
                                 htpasswd=htpasswd,
                                 secret=stack_secret(ctx, "registry_http_secret", lambda: token(24)))
        write_private(d / "config.yml", config)
        # dockerd (owned or not) trusts the stack CA for this registry only.
        trust = DOCKER_CERTS_D / REGISTRY / "ca.crt"
        trust.parent.mkdir(parents=True, exist_ok=True)
        if not trust.exists() or trust.read_bytes() != ctx.ca_file.read_bytes():
            trust.write_bytes(ctx.ca_file.read_bytes())

    def start(self, ctx: StackContext) -> str:
        if ctx.running_pid(self.name):
            return f"{self.name}: already running at {self.address}"
        ctx.spawn(self.name, [BINARY, "serve", str(self.dir(ctx) / "config.yml")])
        return f"{self.name}: started at {self.address}"

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        pid = ctx.running_pid(self.name)
        if pid is None or not pid_alive(pid):
            return False, "not running (no live pid in .devstack/run)"
        try:
            anonymous = probe(ctx.ca_file)
            authed = probe(ctx.ca_file, (USER, self.password(ctx)))
        except (OSError, ssl.SSLError) as exc:
            return False, f"GET https://{REGISTRY}/v2/ failed: {exc}"
        if anonymous != 401 or authed != 200:
            return False, f"GET /v2/ answered {anonymous} without and {authed} with credentials, " \
                          "expected 401 and 200"
        return True, "TLS ok; /v2/ 401 without credentials, 200 with"

    def after_up(self, ctx: StackContext) -> None:
        """Push the base image once, so that every later push of an image built on it only sends its
        own layers (dockerd compresses a 600 MB base layer for minutes on a 2-core machine)."""
        from devstack.services.base_image import IMAGE, IMAGE_REPO, IMAGE_TAG
        from devstack.services.docker_engine import docker_client

        auth = (USER, self.password(ctx))
        client = docker_client(timeout=1800)
        try:
            image = client.images.get(IMAGE)
            if manifest_config_digest(ctx.ca_file, auth, IMAGE_REPO, IMAGE_TAG) == image.id:
                print(f"{self.name}: {REGISTRY}/{IMAGE} already pushed", flush=True)
                return
            target = f"{REGISTRY}/{IMAGE_REPO}"
            image.tag(target, IMAGE_TAG)
            print(f"{self.name}: pushing {IMAGE} to {target}:{IMAGE_TAG} (once per base image)", flush=True)
            events = client.api.push(target, tag=IMAGE_TAG, stream=True, decode=True,
                                     auth_config={"username": auth[0], "password": auth[1]})
            errors = [e["error"] for e in events if "error" in e]
        finally:
            client.close()
        if errors:
            raise StackError(f"{self.name}: push of {IMAGE} to {REGISTRY} failed: {errors[0]}")
        if manifest_config_digest(ctx.ca_file, auth, IMAGE_REPO, IMAGE_TAG) != image.id:
            raise StackError(f"{self.name}: after the push, {REGISTRY}/{IMAGE} does not have config "
                             f"digest {image.id}")
        print(f"{self.name}: {REGISTRY}/{IMAGE} pushed", flush=True)

    def env(self, ctx: StackContext) -> dict[str, str]:
        password = self.password(ctx)
        return {
            "EDGE_REGISTRY": REGISTRY,
            "EDGE_REGISTRY_USER": USER,
            "EDGE_REGISTRY_PASSWORD": password,
            "EDGE_REGISTRY_CA_FILE": str(ctx.ca_file),
            "AIRFLOW_CONN_ACR_DEFAULT": json.dumps({
                "conn_type": "azure_container_registry", "host": REGISTRY, "login": USER,
                "password": password, "extra": {"ca_bundle": str(ctx.ca_file)}}),
        }
