"""Build, smoke-test and push the model image: docker-py against the edge VM's Docker, the registry's HTTP API.

Two connections:

- ``docker_edge`` (type generic): ``host`` is the Docker endpoint, ``unix:///var/run/docker.sock``,
  ``tcp://host:2376`` or ``ssh://user@host`` (the edge VM runs Docker). Extra: ``network_mode`` for
  builds and the smoke-test container (``host`` on the devstack, which runs dockerd with no bridge;
  leave unset in production for Docker's default bridge), ``timeout`` (seconds, default 600),
  ``tls`` / ``tls_ca_cert`` / ``tls_client_cert`` / ``tls_client_key`` for tcp; for ssh, ``key_file``
  and ``host_key`` (pinned, as in the VM's SSH connection), or ``use_ssh_client`` to use the ssh binary
  and ~/.ssh instead.
- ``acr_default`` (type azure_container_registry): ``host`` is the registry (``name.azurecr.io`` or an
  Azure Stack Hub ACR, with port if any), credentials come from the Azure provider's
  AzureContainerRegistryHook (login/password, or a service principal that lists the admin password).
  Extra ``ca_bundle``: a CA file for the registry's HTTPS API when it is signed by a private CA. The
  Docker daemon must trust the same CA for pushes (``/etc/docker/certs.d/<registry>/ca.crt``).

The registry is checked through its HTTP API (distribution v2): the manifest digest a tag resolves to,
and the labels in the image config behind it. That makes pushes verifiable (the registry's digest
equals the pushed one) and builds idempotent (a tag already holding the same model is not rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from edge_training.exceptions import (
    ContainerImageError,
    HostKeyMismatchError,
    RegistryAuthError,
    RegistryPushError,
    SmokeTestError,
)

if TYPE_CHECKING:
    import docker
    import requests

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SERVING_DIR = REPO_ROOT / "include" / "serving"

# Same namespace as the base image's own label (org.edge-training.base.version).
LABEL_PREFIX = "org.edge-training."
# Labels that say which model an image holds. Two images with the same values are the same model
# (the build time and the git commit of the scoring app do not change what is served).
IDENTITY_LABELS = ("model.name", "model.version", "data.fingerprint", "job.name")
# Files of a model folder that go into the image; nothing else does (no data can ride along).
MODEL_FILES = ("model.joblib", "metrics.json", "MODEL_CARD.md", "feature_importance.png")

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]

_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_AUTH_WORDS = ("unauthorized", "authentication required", "no basic auth credentials", "denied",
               "incorrect username or password")


# --------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# --------------------------------------------------------------------------------------------------


def repository_name(model_name: str, *, prefix: str | None = None) -> str:
    """A registry repository for a model name: lower case, runs of other characters become '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", model_name.strip().lower())
    name = re.sub(r"[._-]{2,}", "-", name).strip("._-")
    parts = [p for p in (prefix or "").strip("/").split("/") if p] + [name]
    for part in parts:
        if not _REPO_COMPONENT.match(part):
            raise ContainerImageError(
                f"repository for model {model_name!r}: component {part!r} is not a valid registry path "
                "component (expected lower-case letters, digits and single . _ - separators)"
            )
    return "/".join(parts)


def fingerprint_tag(fingerprint: str) -> str:
    """``fp-`` plus the first 12 characters of the data fingerprint (an algorithm prefix is dropped)."""
    value = fingerprint.strip().lower()
    if ":" in value:
        value = value.split(":", 1)[1]
    value = re.sub(r"[^a-z0-9]", "", value)[:12]
    if len(value) < 6:
        raise ContainerImageError(
            f"data fingerprint {fingerprint!r}: expected at least 6 alphanumeric characters for the "
            f"fp- tag, found {len(value)}"
        )
    return f"fp-{value}"


def image_tags(model_version: str, data_fingerprint: str) -> list[str]:
    """The tags of a model image: the model version, then the data fingerprint's short form."""
    version = str(model_version).strip()
    if not _TAG.match(version):
        raise ContainerImageError(
            f"model version {model_version!r} is not a valid image tag (expected letters, digits, "
            "'_', '.', '-', at most 128 characters, not starting with '.' or '-')"
        )
    return [version, fingerprint_tag(data_fingerprint)]


def model_labels(*, model_name: str, model_version: str, data_fingerprint: str, job_name: str,
                 partition: str = "", git_commit: str = "", created: str = "") -> dict[str, str]:
    """The custom labels of a model image, keyed with LABEL_PREFIX (the Dockerfile sets the same)."""
    return {
        f"{LABEL_PREFIX}model.name": str(model_name),
        f"{LABEL_PREFIX}model.version": str(model_version),
        f"{LABEL_PREFIX}data.fingerprint": str(data_fingerprint),
        f"{LABEL_PREFIX}job.name": str(job_name),
        f"{LABEL_PREFIX}partition": str(partition or ""),
        f"{LABEL_PREFIX}git.commit": str(git_commit or "unknown"),
        f"{LABEL_PREFIX}created": str(created),
    }


def build_args(labels: dict[str, str], *, base_image: str, source: str = "") -> dict[str, str]:
    """Dockerfile build args for the labels (include/serving/Dockerfile declares them)."""
    p = LABEL_PREFIX
    return {
        "BASE_IMAGE": base_image,
        "MODEL_NAME": labels[f"{p}model.name"],
        "MODEL_VERSION": labels[f"{p}model.version"],
        "DATA_FINGERPRINT": labels[f"{p}data.fingerprint"],
        "JOB_NAME": labels[f"{p}job.name"],
        "PARTITION": labels[f"{p}partition"],
        "GIT_COMMIT": labels[f"{p}git.commit"],
        "CREATED": labels[f"{p}created"],
        "SOURCE": source,
    }


def label_differences(expected: dict[str, str], found: dict[str, str] | None) -> dict[str, tuple[str, str | None]]:
    """Identity labels whose value differs: {label: (expected, found)}."""
    found = found or {}
    diffs = {}
    for key in IDENTITY_LABELS:
        full = f"{LABEL_PREFIX}{key}"
        if full in expected and found.get(full) != expected[full]:
            diffs[full] = (expected[full], found.get(full))
    return diffs


@dataclass
class BuildStep:
    number: int
    instruction: str
    cached: bool = False


@dataclass
class BuildReport:
    """What a classic-builder build stream said: the steps, which came from cache, the image id."""

    image_id: str | None = None
    steps: list[BuildStep] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cached_steps(self) -> list[int]:
        return [s.number for s in self.steps if s.cached]

    def summary(self) -> dict[str, Any]:
        """JSON-safe: seconds, and per step the instruction (truncated) and whether it came from cache."""
        return {
            "seconds": round(self.seconds, 3),
            "steps": [{"number": s.number, "instruction": s.instruction[:120], "cached": s.cached}
                      for s in self.steps],
            "cached_steps": self.cached_steps,
        }


_STEP = re.compile(r"^Step (\d+)/\d+ : (.*)$")


def parse_build_stream(items: Iterable[dict[str, Any]], *, image: str = "image") -> BuildReport:
    """Read a docker-py build stream; raise ContainerImageError on an error item, naming the step."""
    report = BuildReport()
    for item in items:
        if "error" in item or "errorDetail" in item:
            message = item.get("error") or (item.get("errorDetail") or {}).get("message") or str(item)
            step = report.steps[-1] if report.steps else None
            where = f" at step {step.number} ({step.instruction})" if step else ""
            tail = "".join(report.log[-15:]).rstrip()
            raise ContainerImageError(f"docker build of {image} failed{where}: {message.strip()}\n{tail}")
        aux = item.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            report.image_id = aux["ID"]
        text = item.get("stream")
        if not text:
            continue
        report.log.append(text)
        for line in text.splitlines():
            line = line.strip()
            match = _STEP.match(line)
            if match:
                report.steps.append(BuildStep(int(match.group(1)), match.group(2)))
            elif line == "---> Using cache" and report.steps:
                report.steps[-1].cached = True
            elif line.startswith("Successfully built ") and not report.image_id:
                report.image_id = line.split()[-1]
    if not report.image_id:
        raise ContainerImageError(
            f"docker build of {image}: the build stream ended without an image id; last output: "
            + "".join(report.log[-5:]).strip()
        )
    return report


def is_auth_error(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in _AUTH_WORDS)


def parse_push_stream(items: Iterable[dict[str, Any]], *, ref: str, registry: str) -> str:
    """Read a docker-py push stream: the pushed manifest digest, or a named error.

    Push errors arrive as ``{"error": ...}`` items, not as exceptions.
    """
    digest = None
    for item in items:
        if "error" in item or "errorDetail" in item:
            message = (item.get("error") or (item.get("errorDetail") or {}).get("message") or str(item)).strip()
            if is_auth_error(message):
                raise RegistryAuthError(
                    f"registry {registry} refused the push of {ref}: {message}. Check the login and "
                    "password of the registry connection (and that the account may push)."
                )
            raise RegistryPushError(f"push of {ref} to {registry} failed: {message}")
        aux = item.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
        status = item.get("status") or ""
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", status)
        if match and not digest:
            digest = match.group(1)
    if not digest:
        raise RegistryPushError(f"push of {ref} to {registry}: the push stream ended without a digest")
    return digest


def check_predictions(result: dict[str, Any], rows: int, *, image: str) -> list[Any]:
    """Smoke-test verdict on a /score response body: a list of ``rows`` predictions of one scalar type."""
    if not isinstance(result, dict) or not isinstance(result.get("predictions"), list):
        raise SmokeTestError(
            f"smoke test of {image}: expected a JSON object with a 'predictions' list from /score, "
            f"found {str(result)[:300]}"
        )
    predictions = result["predictions"]
    if len(predictions) != rows:
        raise SmokeTestError(
            f"smoke test of {image}: expected {rows} predictions for {rows} rows, found {len(predictions)}"
        )
    kinds = {("number" if isinstance(p, (int, float)) and not isinstance(p, bool) else
              "string" if isinstance(p, str) else type(p).__name__) for p in predictions}
    if len(kinds) != 1 or kinds - {"number", "string"}:
        raise SmokeTestError(
            f"smoke test of {image}: expected predictions that are all numbers or all strings, "
            f"found types {sorted(kinds)}"
        )
    probabilities = result.get("probabilities")
    if probabilities is not None:
        if not isinstance(probabilities, list) or len(probabilities) != rows or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0 for p in probabilities
        ):
            raise SmokeTestError(
                f"smoke test of {image}: expected {rows} probabilities between 0 and 1, found "
                f"{str(probabilities)[:200]}"
            )
    return predictions


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ..., 'scope': ...}) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def resolve_model_dir(model_dir: Path) -> Path:
    """The folder holding model.joblib: ``model_dir`` itself or its one subfolder that has it.

    Azure ML downloads put a model under ``<download path>/<model name>/``.
    """
    if not model_dir.is_dir():
        raise ContainerImageError(f"model folder {model_dir} does not exist (expected a folder with model.joblib)")
    if (model_dir / "model.joblib").is_file():
        return model_dir
    found = sorted(p.parent for p in model_dir.rglob("model.joblib") if p.is_file())
    if len(found) == 1:
        return found[0]
    listing = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())[:20]
    raise ContainerImageError(
        f"model folder {model_dir}: expected exactly one model.joblib, found "
        f"{len(found) or 'none'}; files: {listing or 'none'}"
    )


def prepare_context(*, serving_dir: Path, model_dir: Path, dest: Path) -> Path:
    """Assemble a build context: the serving folder (Dockerfile, app) plus ``model/`` with the model files.

    Only MODEL_FILES are copied from the model folder, so nothing else from a job output (logs, a
    stray data file) can reach the image.
    """
    if not (serving_dir / "Dockerfile").is_file():
        raise ContainerImageError(f"serving folder {serving_dir}: expected a Dockerfile, found none")
    model_dir = resolve_model_dir(model_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for item in sorted(serving_dir.iterdir()):
        if item.name in ("__pycache__", "model", ".pytest_cache") or item.suffix == ".pyc":
            continue
        target = dest / item.name
        if item.is_dir():
            shutil.copytree(item, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(item, target)
    (dest / "model").mkdir()
    for name in MODEL_FILES:
        source = model_dir / name
        if source.is_file():
            shutil.copyfile(source, dest / "model" / name)
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def docker_client_kwargs(host: str | None, port: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    """docker.DockerClient arguments from a docker_edge connection (host, port, extra)."""
    base_url = (host or "").strip() or "unix:///var/run/docker.sock"
    if not base_url.startswith(("unix://", "tcp://", "ssh://", "npipe://", "http://", "https://")):
        raise ContainerImageError(
            f"Docker host {base_url!r}: expected unix://, tcp:// or ssh:// in the connection's host"
        )
    if port and base_url.startswith(("tcp://", "ssh://")) and ":" not in base_url.split("://", 1)[1].split("@")[-1]:
        base_url = f"{base_url}:{port}"
    tls: Any = False
    if extra.get("tls") or extra.get("tls_ca_cert") or extra.get("tls_client_cert"):
        from docker.tls import TLSConfig

        cert = (extra["tls_client_cert"], extra["tls_client_key"]) if extra.get("tls_client_cert") else None
        tls = TLSConfig(client_cert=cert, ca_cert=extra.get("tls_ca_cert"), verify=extra.get("tls_verify", True))
    return {
        "base_url": base_url,
        "version": "auto",
        "timeout": int(extra.get("timeout", 600)),
        "tls": tls,
        "use_ssh_client": bool(extra.get("use_ssh_client", False)),
    }


def parse_host_key(host_key: str):
    """A paramiko key from ``'ssh-ed25519 AAAA...'`` or the bare base64 blob (as the SSH connection holds it)."""
    import base64

    import paramiko

    parts = host_key.strip().split()
    blob = base64.b64decode(parts[-1])
    key_type = parts[0] if len(parts) > 1 else blob[4:4 + int.from_bytes(blob[:4], "big")].decode()
    return key_type, paramiko.PKey.from_type_string(key_type, blob)


def pinned_ssh_client(kwargs: dict[str, Any], *, key_file: str | None, host_key: str | None) -> docker.DockerClient:
    """A DockerClient over ssh:// (paramiko) that logs in with ``key_file`` and accepts only ``host_key``.

    docker-py's own ssh transport takes the key and known hosts from ~/.ssh only; the edge VM's
    connection carries both (like the SSH connection of the same VM), so the transport is built here.
    Without ``host_key`` the system known_hosts must know the host (unknown hosts are refused).

    Each HTTP connection gets its own SSH connection: docker-py multiplexes sessions on one, and
    streamed or hijacked responses (build, exec) keep theirs open, so a build and a smoke test run
    into sshd's MaxSessions (10) on the one connection.
    """
    import urllib.parse

    import docker
    import paramiko
    from docker.transport.sshconn import SSHConnection, SSHConnectionPool, SSHHTTPAdapter

    url = urllib.parse.urlparse(kwargs["base_url"])
    pinned = parse_host_key(host_key) if host_key else None
    known_as = url.hostname if not url.port or url.port == 22 else f"[{url.hostname}]:{url.port}"

    def new_ssh_client(params: dict[str, Any]) -> paramiko.SSHClient:
        ssh = paramiko.SSHClient()
        ssh.load_system_host_keys()
        if pinned:
            ssh.get_host_keys().add(known_as, *pinned)
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.connect(**params)
        return ssh

    class OwnSSHConnection(SSHConnection):
        def __init__(self, params: dict[str, Any], timeout: float) -> None:
            super().__init__(ssh_transport=None, timeout=timeout)
            self._params = params
            self._ssh: paramiko.SSHClient | None = None

        def connect(self) -> None:
            self._ssh = new_ssh_client(self._params)
            channel = self._ssh.get_transport().open_session()
            channel.settimeout(self.timeout)
            channel.exec_command("docker system dial-stdio")
            self.sock = channel

        def close(self) -> None:
            super().close()
            if self._ssh is not None:
                self._ssh.close()
                self._ssh = None

    class OwnSSHConnectionPool(SSHConnectionPool):
        def __init__(self, params: dict[str, Any], timeout: float, maxsize: int) -> None:
            super().__init__(ssh_client=None, timeout=timeout, maxsize=maxsize)
            self._params = params

        def _new_conn(self) -> OwnSSHConnection:
            return OwnSSHConnection(self._params, self.timeout)

    class PinnedSSHAdapter(SSHHTTPAdapter):
        def _create_paramiko_client(self, base_url: str) -> None:
            super()._create_paramiko_client(base_url)
            if key_file:
                self.ssh_params.update(key_filename=key_file, look_for_keys=False, allow_agent=False)
            if pinned:
                self.ssh_client.get_host_keys().add(known_as, *pinned)

        def get_connection(self, url: str, proxies: Any = None) -> OwnSSHConnectionPool:
            with self.pools.lock:
                pool = self.pools.get(url)
                if pool is None:
                    pool = OwnSSHConnectionPool(self.ssh_params, self.timeout, self.max_pool_size)
                    self.pools[url] = pool
            return pool

    # Shell-out mode defers connecting, so the adapter can be swapped before the first request.
    client = docker.DockerClient(**{**kwargs, "use_ssh_client": True, "version": "1.41"})
    # Connects once here: a wrong host key or key fails now, with paramiko's exception.
    adapter = PinnedSSHAdapter(kwargs["base_url"], kwargs["timeout"])
    adapter.ssh_client.close()
    client.api._custom_adapter = adapter
    client.api.mount("http+docker://ssh", adapter)
    client.api._version = client.api._retrieve_server_version()
    return client


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The smoke-test client, run inside the container with the image's own python3 (docker exec), so it
# reaches the app the same way whether Docker is local or on the edge VM, on the host network or a
# bridge. It prints one JSON line; the hook judges it.
SMOKE_PROBE = r"""
import json, sys, time, urllib.error, urllib.request
cfg = json.loads(sys.argv[1])
base = "http://127.0.0.1:%d" % cfg["port"]
deadline = time.monotonic() + cfg["timeout"]
health, last = None, "no attempt"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(base + "/health", timeout=3) as r:
            health = json.loads(r.read())
            break
    except Exception as exc:
        last = "%s: %s" % (type(exc).__name__, exc)
        time.sleep(0.25)
if health is None:
    print(json.dumps({"stage": "health", "error": last}))
    sys.exit(0)
rows = cfg["rows"]
if not rows:
    rows = [{f: float(i + j) for j, f in enumerate(health.get("features") or [])} for i in range(3)]
req = urllib.request.Request(base + "/score", data=json.dumps({"rows": rows}).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
except Exception as exc:
    print(json.dumps({"stage": "score", "error": "%s: %s" % (type(exc).__name__, exc)}))
    sys.exit(0)
try:
    parsed = json.loads(body)
except ValueError:
    parsed = body[:300].decode("utf-8", "replace")
print(json.dumps({"stage": "done", "health": health, "status": status, "body": parsed, "rows": len(rows)}))
"""


# --------------------------------------------------------------------------------------------------
# Registry HTTP API (distribution v2)
# --------------------------------------------------------------------------------------------------


@dataclass
class Manifest:
    digest: str
    media_type: str
    raw: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.raw)


class RegistryClient:
    """The few registry API calls the hook needs, with Basic or token (Bearer) auth as the registry asks."""

    def __init__(self, *, server: str, username: str, password: str, verify: str | bool = True,
                 timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.base = self.server if "://" in self.server else f"https://{self.server}"
        self._auth = (username, password)
        self.username = username
        self.verify = verify
        self.timeout = timeout
        self._tokens: dict[str, str] = {}

    @cached_property
    def session(self) -> requests.Session:
        import requests

        return requests.Session()

    def _request(self, method: str, path: str, *, scope: str | None = None, **kwargs: Any) -> requests.Response:
        import requests

        url = f"{self.base}{path}"
        headers = dict(kwargs.pop("headers", {}) or {})
        token = self._tokens.get(scope or "")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            # verify per request: a session-level verify loses to REQUESTS_CA_BUNDLE in requests.
            response = self.session.request(method, url, headers=headers, timeout=self.timeout,
                                            verify=self.verify, auth=None if token else self._auth, **kwargs)
            if response.status_code == 401:
                scheme, params = parse_www_authenticate(response.headers.get("WWW-Authenticate", ""))
                if scheme == "bearer" and not token:
                    self._tokens[scope or ""] = self._fetch_token(params, scope)
                    headers["Authorization"] = f"Bearer {self._tokens[scope or '']}"
                    response = self.session.request(method, url, headers=headers, timeout=self.timeout,
                                                    verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise ContainerImageError(
                f"registry {self.server}: TLS verification failed ({exc}); give the registry's CA file as "
                "the registry connection's extra 'ca_bundle' or the operator's registry_ca_bundle"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise ContainerImageError(f"registry {self.server} is not reachable at {url}: {exc}") from None
        if response.status_code == 401:
            raise RegistryAuthError(
                f"registry {self.server} refused the credentials of user {self.username!r} "
                f"({method} {path}: HTTP 401). Check the registry connection's login and password."
            )
        if response.status_code == 403:
            raise RegistryAuthError(
                f"registry {self.server}: user {self.username!r} may not {method} {path} (HTTP 403)"
            )
        return response

    def _fetch_token(self, params: dict[str, str], scope: str | None) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryAuthError(f"registry {self.server} asked for a Bearer token without a realm")
        query = {"service": params.get("service", "")}
        if scope or params.get("scope"):
            query["scope"] = scope or params["scope"]
        response = self.session.get(realm, params=query, auth=self._auth, timeout=self.timeout, verify=self.verify)
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                f"registry {self.server} refused the credentials of user {self.username!r} at its token "
                f"endpoint (HTTP {response.status_code}). Check the registry connection's login and password."
            )
        response.raise_for_status()
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryAuthError(f"registry {self.server}: token endpoint returned no token")
        return token

    def close(self) -> None:
        if "session" in self.__dict__:
            self.__dict__.pop("session").close()

    def check_auth(self) -> None:
        """Raise RegistryAuthError unless the registry accepts the credentials."""
        response = self._request("GET", "/v2/")
        if response.status_code != 200:
            raise ContainerImageError(
                f"registry {self.server}: expected HTTP 200 from /v2/ (the distribution API), "
                f"found {response.status_code}"
            )

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest a tag or digest resolves to, or None if the repository or tag does not exist."""
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ContainerImageError(
                f"registry {self.server}: GET manifest {repository}:{reference} returned "
                f"HTTP {response.status_code}: {response.text[:300]}"
            )
        raw = response.content
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        header = response.headers.get("Docker-Content-Digest")
        if header and header != computed:
            raise RegistryPushError(
                f"registry {self.server}: manifest {repository}:{reference} has Docker-Content-Digest "
                f"{header} but its content hashes to {computed}"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Manifest(digest=computed, media_type=media_type or json.loads(raw).get("mediaType", ""), raw=raw)

    def image_labels(self, repository: str, manifest: Manifest) -> dict[str, str]:
        """The labels in the image config a manifest points to (the first image of an index)."""
        if manifest.media_type in INDEX_TYPES:
            entries = manifest.json.get("manifests") or []
            if not entries:
                return {}
            inner = self.get_manifest(repository, entries[0]["digest"])
            if inner is None:
                return {}
            manifest = inner
        config_digest = (manifest.json.get("config") or {}).get("digest")
        if not config_digest:
            return {}
        response = self._request("GET", f"/v2/{repository}/blobs/{config_digest}",
                                 scope=f"repository:{repository}:pull")
        if response.status_code != 200:
            raise ContainerImageError(
                f"registry {self.server}: GET config blob {config_digest} of {repository} returned "
                f"HTTP {response.status_code}"
            )
        return (response.json().get("config") or {}).get("Labels") or {}

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """Point ``tag`` at an existing manifest (a re-tag without Docker). Returns the digest."""
        response = self._request(
            "PUT", f"/v2/{repository}/manifests/{tag}",
            scope=f"repository:{repository}:pull,push",
            headers={"Content-Type": manifest.media_type}, data=manifest.raw,
        )
        if response.status_code not in (200, 201):
            raise RegistryPushError(
                f"registry {self.server}: PUT manifest {repository}:{tag} returned HTTP "
                f"{response.status_code}: {response.text[:300]}"
            )
        return response.headers.get("Docker-Content-Digest") or manifest.digest


# --------------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------------


@dataclass
class ExistingImage:
    repository: str
    tag: str
    digest: str
    labels: dict[str, str]


class ContainerImageHook(BaseHook):
    """Docker (build, run, push) on the docker_edge host and the registry of the acr_default connection."""

    conn_name_attr = "docker_conn_id"
    default_conn_name = "docker_edge"
    conn_type = "generic"
    hook_name = "Edge Docker host"

    def __init__(self, *, docker_conn_id: str = "docker_edge", registry_conn_id: str = "acr_default",
                 registry_ca_bundle: str | None = None, network_mode: str | None = None) -> None:
        super().__init__()
        self.docker_conn_id = docker_conn_id
        self.registry_conn_id = registry_conn_id
        self._registry_ca_bundle = registry_ca_bundle
        self._network_mode = network_mode

    # ---- connections ----

    @cached_property
    def docker_connection(self):
        return self.get_connection(self.docker_conn_id)

    @cached_property
    def network_mode(self) -> str | None:
        """From the operator, else the connection's extra; None means Docker's default (bridge)."""
        mode = self._network_mode or self.docker_connection.extra_dejson.get("network_mode")
        return mode or None

    @cached_property
    def docker_client(self) -> docker.DockerClient:
        import docker

        conn = self.docker_connection
        extra = conn.extra_dejson
        kwargs = docker_client_kwargs(conn.host, conn.port, extra)
        try:
            if kwargs["base_url"].startswith("ssh://") and not kwargs["use_ssh_client"]:
                client = pinned_ssh_client(kwargs, key_file=extra.get("key_file"), host_key=extra.get("host_key"))
            else:
                client = docker.DockerClient(**kwargs)
            client.ping()
        except Exception as exc:  # docker, paramiko and socket errors alike: say which host and why
            if type(exc).__name__ == "BadHostKeyException":
                raise HostKeyMismatchError(
                    f"Docker host {kwargs['base_url']} (connection {self.docker_conn_id!r}) presented a host key "
                    f"different from the pinned one: {exc}"
                ) from None
            raise ContainerImageError(
                f"Docker host {kwargs['base_url']} (connection {self.docker_conn_id!r}) is not reachable: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return client

    def check_connections(self) -> None:
        """Reach the Docker host and log in to the registry, so a bad connection is named up front.

        A build that finds its image already pushed needs neither, but the next new model will: a
        broken ``docker_edge`` or ``acr_default`` should fail this run, not pass until then.
        """
        self.docker_client  # noqa: B018 - connects and pings, naming the connection on failure
        try:
            self.registry.check_auth()
        except ContainerImageError as err:
            raise type(err)(f"registry connection {self.registry_conn_id!r}: {err}") from None

    def close(self) -> None:
        """Close the Docker client and the registry session, if they were opened."""
        if "docker_client" in self.__dict__:
            self.__dict__.pop("docker_client").close()
        if "registry" in self.__dict__:
            self.__dict__.pop("registry").close()

    def __enter__(self) -> ContainerImageHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @cached_property
    def registry_credentials(self):
        """server, username, password of the registry connection, via the Azure provider's ACR hook."""
        from airflow.providers.microsoft.azure.hooks.container_registry import AzureContainerRegistryHook

        creds = AzureContainerRegistryHook(conn_id=self.registry_conn_id).get_conn()
        if not creds.server:
            raise ContainerImageError(
                f"registry connection {self.registry_conn_id!r}: expected the registry host in 'host', found none"
            )
        return creds

    @property
    def registry_host(self) -> str:
        server = self.registry_credentials.server.strip().rstrip("/")
        return server.split("://", 1)[1] if "://" in server else server

    @cached_property
    def registry(self) -> RegistryClient:
        creds = self.registry_credentials
        ca = self._registry_ca_bundle or self.get_connection(self.registry_conn_id).extra_dejson.get("ca_bundle")
        return RegistryClient(server=self.registry_host, username=creds.username, password=creds.password,
                              verify=ca or True)

    # ---- registry ----

    def find_existing(self, repository: str, tag: str, expected_labels: dict[str, str]) -> ExistingImage | None:
        """The image a tag already holds, if it holds the same model; None if the tag is free.

        A tag holding a different model (another job, fingerprint or version) is an error: an image tag
        must keep meaning one model, so it is never overwritten silently.
        """
        manifest = self.registry.get_manifest(repository, tag)
        if manifest is None:
            return None
        labels = self.registry.image_labels(repository, manifest)
        diffs = label_differences(expected_labels, labels)
        if diffs:
            detail = "; ".join(f"{k}: expected {e!r}, found {f!r}" for k, (e, f) in diffs.items())
            raise ContainerImageError(
                f"image {self.registry_host}/{repository}:{tag} ({manifest.digest}) already holds another "
                f"model ({detail}); refusing to overwrite the tag"
            )
        return ExistingImage(repository=repository, tag=tag, digest=manifest.digest, labels=labels)

    def ensure_tag(self, repository: str, tag: str, digest: str, *, only_if_missing: bool = False) -> bool:
        """Point ``tag`` at the manifest ``digest`` (already in the repository) without Docker.

        True when the tag was written; with ``only_if_missing`` an existing tag is left as it is.
        """
        current = self.registry.get_manifest(repository, tag)
        if current is not None and (current.digest == digest or only_if_missing):
            return False
        manifest = self.registry.get_manifest(repository, digest)
        if manifest is None:
            raise RegistryPushError(f"registry {self.registry_host}: {repository}@{digest} not found")
        self.registry.put_manifest(repository, tag, manifest)
        self.verify_digest(repository, tag, digest)
        self.log.info("Tagged %s/%s@%s as %s", self.registry_host, repository, digest, tag)
        return True

    def verify_digest(self, repository: str, tag: str, digest: str) -> None:
        """Raise RegistryPushError unless the registry's manifest for ``tag`` has ``digest``."""
        manifest = self.registry.get_manifest(repository, tag)
        if manifest is None:
            raise RegistryPushError(
                f"registry {self.registry_host}: {repository}:{tag} not found after pushing {digest}"
            )
        if manifest.digest != digest:
            raise RegistryPushError(
                f"registry {self.registry_host}: {repository}:{tag} has digest {manifest.digest}, expected "
                f"the pushed {digest}"
            )

    # ---- build ----

    def build(self, *, context_dir: Path, image: str, build_args: dict[str, str], nocache: bool = False) -> BuildReport:
        """Build ``context_dir`` as ``image`` (classic builder, so cache use is visible per step)."""
        import docker

        started = time.monotonic()
        self.log.info("Building %s on %s (network_mode=%s)", image, self.docker_connection.host, self.network_mode)
        try:
            stream = self.docker_client.api.build(
                path=str(context_dir), tag=image, buildargs=build_args, network_mode=self.network_mode,
                rm=True, forcerm=True, pull=False, nocache=nocache, decode=True,
            )
            report = parse_build_stream(self._log_stream(stream), image=image)
        except docker.errors.APIError as exc:
            raise ContainerImageError(f"docker build of {image} failed: {exc.explanation or exc}") from None
        report.seconds = time.monotonic() - started
        cached = len(report.cached_steps)
        self.log.info("Built %s as %s in %.1f s (%d of %d steps from cache)", image, report.image_id,
                      report.seconds, cached, len(report.steps))
        return report

    def _log_stream(self, stream: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in stream:
            text = item.get("stream")
            if text and text.strip():
                self.log.info("%s", text.rstrip())
            yield item

    def tag(self, image: str, repository_ref: str, tag: str) -> None:
        if not self.docker_client.api.tag(image, repository_ref, tag=tag, force=True):
            raise ContainerImageError(f"docker tag {image} {repository_ref}:{tag} failed")

    def local_image(self, image: str):
        """A local image (on the Docker host) by reference or id."""
        import docker

        try:
            return self.docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ContainerImageError(
                f"image {image} not found on Docker host {self.docker_connection.host} (connection "
                f"{self.docker_conn_id!r})"
            ) from None

    def local_image_id(self, image: str) -> str:
        return self.local_image(image).id

    # ---- smoke test ----

    def smoke_test(self, image: str, *, rows: list[Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Run the image, wait for /health, POST rows to /score, judge the answer; always remove the container.

        Without ``rows`` the probe sends three synthetic rows built from the features /health reports.
        Raises SmokeTestError with the container's last log lines on any failure.
        """
        import docker

        host_network = self.network_mode == "host"
        port = free_port() if host_network else 8080
        env = {"SCORING_PORT": str(port), "SCORING_HOST": "127.0.0.1" if host_network else "0.0.0.0"}
        name = f"smoke-{uuid.uuid4().hex[:12]}"
        container = None
        started = time.monotonic()
        try:
            # create, then start: a container that fails to start is still removed below.
            container = self.docker_client.containers.create(
                image, name=name, environment=env, network_mode=self.network_mode,
                labels={f"{LABEL_PREFIX}smoke-test": "1"},
            )
            container.start()
            self.log.info("Smoke test of %s: container %s on port %d", image, name, port)
            config = json.dumps({"port": port, "timeout": timeout, "rows": rows or []})
            exit_code, output = container.exec_run(["python3", "-c", SMOKE_PROBE, config], demux=False)
            lines = (output or b"").decode("utf-8", "replace").strip().splitlines()
            verdict = json.loads(lines[-1]) if exit_code == 0 and lines else None
            if verdict is None:
                exited = self._exit_code(container)
                if exited is not None:
                    raise SmokeTestError(
                        f"smoke test of {image}: the scoring app exited with code {exited} before answering "
                        f"/health{self._container_tail(container)}"
                    )
                raise SmokeTestError(
                    f"smoke test of {image}: the probe failed (exit {exit_code}): "
                    f"{' '.join(lines)[-500:]}{self._container_tail(container)}"
                )
            if verdict.get("stage") != "done":
                raise SmokeTestError(
                    f"smoke test of {image}: no answer from {verdict.get('stage')} within {timeout:.0f} s "
                    f"({verdict.get('error')}){self._container_tail(container)}"
                )
            if verdict["status"] != 200:
                raise SmokeTestError(
                    f"smoke test of {image}: POST /score answered HTTP {verdict['status']}, expected 200: "
                    f"{str(verdict['body'])[:300]}{self._container_tail(container)}"
                )
            predictions = check_predictions(verdict["body"], verdict["rows"], image=image)
            seconds = time.monotonic() - started
            self.log.info("Smoke test of %s passed in %.1f s: %d predictions", image, seconds, len(predictions))
            return {"rows": verdict["rows"], "predictions": predictions, "seconds": round(seconds, 3),
                    "features": verdict["health"].get("features", [])}
        except docker.errors.APIError as exc:
            tail = self._container_tail(container) if container is not None else ""
            raise SmokeTestError(f"smoke test of {image} failed: {exc.explanation or exc}{tail}") from None
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass

    @staticmethod
    def _exit_code(container) -> int | None:
        """The container's exit code once it has stopped (waits briefly), None while it runs."""
        try:
            return int(container.wait(timeout=5)["StatusCode"])
        except Exception:  # still running (wait timed out) or gone
            return None

    @staticmethod
    def _container_tail(container) -> str:
        try:
            container.reload()
            logs = container.logs(tail=20).decode("utf-8", "replace").strip()
        except Exception:  # the container may be gone; the main error still stands
            return ""
        return f"\ncontainer {container.name} ({container.status}) last log lines:\n{logs}" if logs else ""

    # ---- push ----

    def push(self, repository_ref: str, tag: str) -> str:
        """Push ``repository_ref:tag`` with the registry connection's credentials; the pushed digest."""
        import docker

        creds = self.registry_credentials
        auth = {"username": creds.username, "password": creds.password}
        ref = f"{repository_ref}:{tag}"
        self.log.info("Pushing %s", ref)
        try:
            stream = self.docker_client.api.push(repository_ref, tag=tag, auth_config=auth, stream=True, decode=True)
            digest = parse_push_stream(stream, ref=ref, registry=self.registry_host)
        except docker.errors.APIError as exc:
            message = str(exc.explanation or exc)
            if is_auth_error(message):
                raise RegistryAuthError(
                    f"registry {self.registry_host} refused the push of {ref}: {message}"
                ) from None
            raise RegistryPushError(f"push of {ref} to {self.registry_host} failed: {message}") from None
        self.log.info("Pushed %s: %s", ref, digest)
        return digest

    def remove_image(self, image: str) -> None:
        import docker

        try:
            self.docker_client.images.remove(image, force=True, noprune=False)
        except docker.errors.ImageNotFound:
            pass
