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

The registry is checked through its HTTP API (distribution v2, registry_client.py): the manifest digest
a tag resolves to, and the labels in the image config behind it. That makes pushes verifiable (the
registry's digest equals the pushed one) and builds idempotent (a tag already holding the same model,
by its identity labels in image_identity.py, is not rebuilt).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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

from edge_training.hooks.docker_ssh import docker_client_kwargs, pinned_ssh_client
from edge_training.hooks.docker_streams import BuildReport, is_auth_error, parse_build_stream, parse_push_stream
from edge_training.hooks.image_identity import LABEL_PREFIX, label_differences, label_instruction, model_identity
from edge_training.hooks.registry_client import RegistryClient
from edge_training.hooks.smoke_test import check_predictions, free_port, smoke_probe_source

if TYPE_CHECKING:
    import docker

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SERVING_DIR = REPO_ROOT / "include" / "serving"

# Files of a model folder that go into the image; nothing else does (no data can ride along).
MODEL_FILES = ("model.joblib", "metrics.json", "MODEL_CARD.md", "feature_importance.png")
#: The model's name and version in the image's model folder (include/serving/score.py reads it).
IDENTITY_FILE = "identity.json"


# --------------------------------------------------------------------------------------------------
# The build context
# --------------------------------------------------------------------------------------------------


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


def prepare_context(*, serving_dir: Path, model_dir: Path, dest: Path, labels: dict[str, str]) -> Path:
    """Assemble a build context: the serving folder (Dockerfile, app) plus ``model/`` with the model files.

    Only MODEL_FILES are copied from the model folder, so nothing else from a job output (logs, a
    stray data file) can reach the image. The model's name and version go beside them as IDENTITY_FILE,
    which the scoring app reports on /health, and ``labels`` (``image_identity.image_labels``) become one
    LABEL instruction at the end of the context's Dockerfile. A rebuild with a new model then runs two
    steps after the cache: the model's layer (with its identity) and the labels. Build args would cost
    an ARG step as well, and the builder's own ``labels`` option one step per label.
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
    (dest / "model" / IDENTITY_FILE).write_text(json.dumps(model_identity(labels), sort_keys=True) + "\n")
    dockerfile = dest / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().rstrip("\n") + "\n\n" + label_instruction(labels) + "\n")
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


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

    def build(self, *, context_dir: Path, image: str, base_image: str, nocache: bool = False) -> BuildReport:
        """Build ``context_dir`` (``prepare_context``) as ``image`` from ``base_image`` (classic builder, so
        cache use is visible per step)."""
        import docker

        started = time.monotonic()
        self.log.info("Building %s on %s (network_mode=%s)", image, self.docker_connection.host, self.network_mode)
        try:
            stream = self.docker_client.api.build(
                path=str(context_dir), tag=image, buildargs={"BASE_IMAGE": base_image}, network_mode=self.network_mode,
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
            answer = self.probe(container, image=image, port=port, rows=rows, timeout=timeout)
            seconds = time.monotonic() - started
            self.log.info("Smoke test of %s passed in %.1f s: %d predictions", image, seconds, answer["rows"])
            return {**answer, "seconds": round(seconds, 3)}
        except docker.errors.APIError as exc:
            tail = self._container_tail(container) if container is not None else ""
            raise SmokeTestError(f"smoke test of {image} failed: {exc.explanation or exc}{tail}") from None
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass

    def probe(self, container, *, image: str, port: int, rows: list[Any] | None = None,
              timeout: float = 60.0) -> dict[str, Any]:
        """Ask a running scoring container for /health, POST rows to /score, judge the answer.

        The probe runs inside the container (``docker exec`` with the image's python3), so it reaches the
        app the same way on any network mode. Raises SmokeTestError with the container's last log lines.
        Returns rows, predictions, probabilities, features, the request rows sent and /health's answer.
        """
        config = json.dumps({"port": port, "timeout": timeout, "rows": rows or []})
        exit_code, output = container.exec_run(["python3", "-c", smoke_probe_source(), config], demux=False)
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
        return {"rows": verdict["rows"], "predictions": predictions, "features": verdict["health"].get("features", []),
                "request": verdict.get("request"), "probabilities": verdict["body"].get("probabilities"),
                "health": verdict["health"]}

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
