"""Serve a model image on the edge VM's Docker, next to the data: blue/green behind one stable address.

Per model, the VM runs a small TCP proxy (edge_training/probes/serving_proxy.py, in the base image on the
host network) on the stable serving port, and at most two scoring containers, in slots ``blue`` and
``green`` on the two ports after it. A deploy pulls the image by digest with the registry connection's
credentials, starts it in the slot that is not serving, smoke-tests it from inside (``/health`` must name
the version; the known ``/score`` request must get the answer the image gave when it was built), then
points the proxy at it and stops the old container. A candidate that fails is removed and the old one
keeps serving; at every moment exactly one version answers on the stable address.

The state lives on the VM (container labels and the proxy's backend file), so a rerun reads where things
stand: the version already serving is left alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from edge_training.exceptions import ContainerImageError, RegistryAuthError, SmokeTestError
from edge_training.hooks.container_image import ContainerImageHook
from edge_training.hooks.docker_streams import is_auth_error
from edge_training.hooks.image_identity import LABEL_PREFIX, repository_name
from edge_training.hooks.smoke_test import check_same_answer

SERVING_LABEL = f"{LABEL_PREFIX}serving.model"
ROLE_LABEL = f"{LABEL_PREFIX}serving.role"
VERSION_LABEL = f"{LABEL_PREFIX}serving.version"
DIGEST_LABEL = f"{LABEL_PREFIX}serving.digest"
SLOT_LABEL = f"{LABEL_PREFIX}serving.slot"
PORT_LABEL = f"{LABEL_PREFIX}serving.port"
SLOTS = ("blue", "green")
#: Where the proxy keeps its backend (``host:port``), inside its container.
BACKEND_FILE = "/tmp/edge-serving-backend"


class DeploymentError(ContainerImageError):
    """A model image could not be deployed on the edge VM (the reason is in the message)."""


def proxy_source() -> str:
    return resources.files("edge_training.probes").joinpath("serving_proxy.py").read_text()


def served_version(answer: dict[str, Any]) -> str:
    """The model version a probe's ``/health`` answer names ("" when it names none)."""
    return str((answer["health"].get("model") or {}).get("version", ""))


def slot_port(serving_port: int, slot: str) -> int:
    """The VM port of a slot: the two ports after the stable one."""
    return serving_port + 1 + SLOTS.index(slot)


def image_digest(image_ref: str) -> str:
    """The digest of a ``registry/repository@sha256:...`` reference; anything else is refused (never a tag)."""
    name, sep, digest = image_ref.rpartition("@")
    if not sep or not name or not digest.startswith("sha256:") or len(digest) != 71:
        raise DeploymentError(
            f"image {image_ref!r}: expected a reference by digest (registry/repository@sha256:<64 hex>)"
        )
    return digest


@dataclass
class ServingContainer:
    """A scoring container of a model on the VM."""

    container: Any
    slot: str
    version: str
    digest: str

    @property
    def name(self) -> str:
        return self.container.name


@dataclass
class ServingState:
    """What the VM runs for a model: the proxy, the container it points at, and any other slot."""

    proxy: Any | None
    backend_port: int | None
    active: ServingContainer | None
    idle: list[ServingContainer]


class EdgeServingHook(ContainerImageHook):
    """Pull, run, smoke-test and switch model images on the docker_edge host (the edge VM's Docker).

    :param docker_conn_id: connection of the VM's Docker.
    :param registry_conn_id: the registry the VM logs in to and pulls from.
    :param registry_ca_bundle: CA file for the registry's TLS (the VM's Docker must trust it too).
    :param network_mode: containers' network mode; None: the connection's ``network_mode`` extra, else
        Docker's default bridge (scoring ports are then published on the VM's 127.0.0.1 only).
    """

    hook_name = "Edge VM model serving"

    # ---- addresses ----

    @property
    def vm_address(self) -> str:
        """The VM's host name as the docker connection names it (localhost for a local socket)."""
        host = (self.docker_connection.host or "").strip()
        if host.startswith(("tcp://", "ssh://", "http://", "https://")):
            return urlsplit(host).hostname or "localhost"
        return "localhost"

    def serving_url(self, serving_port: int) -> str:
        return f"http://{self.vm_address}:{serving_port}"

    @staticmethod
    def _names(model_name: str) -> tuple[str, str]:
        base = f"edge-serving-{repository_name(model_name).replace('/', '-')}"
        return base, f"{base}-proxy"

    # ---- registry ----

    def pull(self, image_ref: str) -> Any:
        """The VM logs in to the registry with the registry connection's credentials and pulls by digest."""
        import docker

        digest = image_digest(image_ref)
        creds = self.registry_credentials
        registry = image_ref.split("/", 1)[0]
        if registry != self.registry_host:
            raise DeploymentError(
                f"image {image_ref} is in registry {registry}, expected the registry of connection "
                f"{self.registry_conn_id!r} ({self.registry_host})"
            )
        auth = {"username": creds.username, "password": creds.password}
        try:
            self.docker_client.login(registry=self.registry_host, **auth)
            # The pull's errors arrive as items of its stream, not as exceptions.
            for item in self.docker_client.api.pull(image_ref.rsplit("@", 1)[0], tag=digest, auth_config=auth,
                                                    stream=True, decode=True):
                if item.get("error"):
                    raise docker.errors.APIError(item["error"], explanation=item["error"])
            image = self.docker_client.images.get(image_ref)
        except docker.errors.APIError as exc:
            message = str(exc.explanation or exc)
            if is_auth_error(message):
                raise RegistryAuthError(
                    f"registry {self.registry_host} refused the VM's login or pull of {image_ref} "
                    f"(connection {self.registry_conn_id!r}): {message}"
                ) from None
            raise DeploymentError(f"pull of {image_ref} on the VM failed: {message}") from None
        repo_digests = image.attrs.get("RepoDigests") or []
        if not any(d.endswith(digest) for d in repo_digests):
            raise DeploymentError(f"pulled {image_ref}, but the VM's image has digests {repo_digests}")
        self.log.info("Pulled %s on the VM (image %s)", image_ref, image.id)
        return image

    # ---- state ----

    def state(self, model_name: str) -> ServingState:
        """Read what serves ``model_name`` on the VM: the proxy's backend file names the active slot."""
        containers = self.docker_client.containers.list(all=True, filters={"label": f"{SERVING_LABEL}={model_name}"})
        proxy = next((c for c in containers if c.labels.get(ROLE_LABEL) == "proxy"), None)
        models = [
            ServingContainer(c, c.labels.get(SLOT_LABEL, ""), c.labels.get(VERSION_LABEL, ""),
                             c.labels.get(DIGEST_LABEL, ""))
            for c in containers if c.labels.get(ROLE_LABEL) == "model"
        ]
        backend_port = None
        if proxy is not None and proxy.status == "running":
            code, out = proxy.exec_run(["cat", BACKEND_FILE])
            if code == 0:
                try:
                    backend_port = int(out.decode().strip().rsplit(":", 1)[1])
                except (IndexError, ValueError):
                    backend_port = None
        serving_port = int(proxy.labels.get(PORT_LABEL, "0")) if proxy is not None else 0
        active = next(
            (m for m in models if backend_port is not None and m.slot in SLOTS
             and slot_port(serving_port, m.slot) == backend_port and m.container.status == "running"),
            None,
        )
        return ServingState(proxy, backend_port, active, [m for m in models if m is not active])

    # ---- containers ----

    def _scoring_env_and_ports(self, port: int) -> tuple[dict[str, str], dict[str, Any] | None]:
        if self.network_mode == "host":
            return {"SCORING_PORT": str(port), "SCORING_HOST": "127.0.0.1"}, None
        return {"SCORING_PORT": "8080", "SCORING_HOST": "0.0.0.0"}, {"8080/tcp": ("127.0.0.1", port)}

    def start_candidate(self, image_ref: str, *, model_name: str, version: str, slot: str, port: int) -> Any:
        """Start the image in ``slot`` (not the serving one), replacing whatever that slot held."""
        import docker

        base, _ = self._names(model_name)
        name = f"{base}-{slot}"
        try:
            self.docker_client.containers.get(name).remove(force=True)
            self.log.info("Removed %s, left over in the idle slot", name)
        except docker.errors.NotFound:
            pass
        env, ports = self._scoring_env_and_ports(port)
        labels = {SERVING_LABEL: model_name, ROLE_LABEL: "model", VERSION_LABEL: str(version),
                  DIGEST_LABEL: image_digest(image_ref), SLOT_LABEL: slot}
        # No restart policy until it passed its smoke test: a candidate that dies stays dead and is reported.
        container = self.docker_client.containers.create(
            image_ref, name=name, environment=env, ports=ports, labels=labels, network_mode=self.network_mode,
        )
        container.start()
        self.log.info("Started %s (%s, version %s) in slot %s on port %d", name, image_ref, version, slot, port)
        return container

    def check_candidate(self, container: Any, *, image_ref: str, version: str, port: int,
                        request: list[Any] | None, record: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        """Smoke-test a started container: /health names ``version``; the known request gets the known answer."""
        import docker

        internal_port = port if self.network_mode == "host" else 8080
        try:
            answer = self.probe(container, image=image_ref, port=internal_port, rows=request, timeout=timeout)
        except docker.errors.APIError as exc:  # the app died: docker exec finds no running container
            exited = self._exit_code(container)
            what = f"the scoring app exited with code {exited}" if exited is not None else f"{exc.explanation or exc}"
            raise SmokeTestError(
                f"smoke test of {image_ref}: {what} before answering /health{self._container_tail(container)}"
            ) from None
        served = served_version(answer)
        if served != str(version):
            raise SmokeTestError(
                f"smoke test of {image_ref}: expected /health to report model version {version}, found {served!r}"
            )
        if record is not None:
            check_same_answer(answer, record, image=image_ref)
        return answer

    def ensure_proxy(self, model_name: str, *, serving_port: int, proxy_image: str, backend_port: int) -> Any:
        """The model's proxy on the stable port, started (pointing at ``backend_port``) if it is not running."""
        import docker

        _, name = self._names(model_name)
        try:
            proxy = self.docker_client.containers.get(name)
            if int(proxy.labels.get(PORT_LABEL, "0")) != serving_port:
                raise DeploymentError(
                    f"proxy {name} listens on port {proxy.labels.get(PORT_LABEL)}, expected "
                    f"{serving_port}; remove it to move the stable address"
                )
            if proxy.status != "running":
                proxy.start()
            return proxy
        except docker.errors.NotFound:
            pass
        config = {"listen_port": serving_port, "backend_file": BACKEND_FILE, "backend": f"127.0.0.1:{backend_port}"}
        proxy = self.docker_client.containers.create(
            proxy_image, name=name, command=["python3", "-c", proxy_source(), json.dumps(config)],
            network_mode="host", restart_policy={"Name": "unless-stopped"},
            labels={SERVING_LABEL: model_name, ROLE_LABEL: "proxy", PORT_LABEL: str(serving_port)},
        )
        proxy.start()
        self.log.info("Started proxy %s on port %d (image %s)", name, serving_port, proxy_image)
        return proxy

    def switch(self, proxy: Any, backend_port: int) -> None:
        """Point the proxy at ``127.0.0.1:backend_port``: an atomic rename of its backend file."""
        backend = f"127.0.0.1:{backend_port}"
        code, out = proxy.exec_run(["python3", "-c", proxy_source(), "switch", BACKEND_FILE, backend])
        if code != 0:
            raise DeploymentError(f"switching proxy {proxy.name} to port {backend_port} failed: {out.decode()[-300:]}")

    def ask_stable_address(self, proxy: Any, *, serving_port: int, image: str, request: list[Any] | None,
                           timeout: float = 30.0) -> dict[str, Any]:
        """/health and /score through the stable address, asked from the VM (inside the proxy container)."""
        return self.probe(proxy, image=image, port=serving_port, rows=request, timeout=timeout)

    def retire(self, serving: ServingContainer, *, drain_seconds: float) -> None:
        """Stop and remove a container the proxy no longer points at, after in-flight requests drained."""
        import docker

        time.sleep(drain_seconds)
        try:
            serving.container.stop(timeout=10)
            serving.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        self.log.info("Stopped %s (version %s)", serving.name, serving.version)

    # ---- the deploy ----

    def deploy(self, *, model_name: str, version: str, image_ref: str, serving_port: int, proxy_image: str,
               request: list[Any] | None, record: dict[str, Any] | None, smoke_timeout: float = 60.0,
               drain_seconds: float = 2.0) -> dict[str, Any]:
        """Make ``version`` (its image by digest) the one that answers on ``serving_port``; see the module doc."""
        digest = image_digest(image_ref)
        url = self.serving_url(serving_port)
        state = self.state(model_name)
        active = state.active
        if active is not None and active.version == str(version) and active.digest == digest:
            answer = self.ask_stable_address(state.proxy, serving_port=serving_port, image=image_ref, request=request)
            served = served_version(answer)
            if served == str(version):
                self.log.info("Version %s (%s) already serves at %s: nothing to do", version, digest, url)
                return {"changed": False, "serving_url": url, "container": active.name, "previous_version": None}
        self.pull(image_ref)
        slot = SLOTS[1 - SLOTS.index(active.slot)] if active is not None else SLOTS[0]
        port = slot_port(serving_port, slot)
        candidate = self.start_candidate(image_ref, model_name=model_name, version=version, slot=slot, port=port)
        try:
            self.check_candidate(candidate, image_ref=image_ref, version=version, port=port, request=request,
                                 record=record, timeout=smoke_timeout)
        except Exception:
            self.log.error("Version %s failed its smoke test; %s keeps serving", version,
                           f"version {active.version}" if active else "nothing")
            candidate.remove(force=True)
            raise
        candidate.update(restart_policy={"Name": "unless-stopped"})  # serving survives a VM restart
        proxy = self.ensure_proxy(model_name, serving_port=serving_port, proxy_image=proxy_image, backend_port=port)
        self.switch(proxy, port)
        answer = self.ask_stable_address(proxy, serving_port=serving_port, image=image_ref, request=request)
        served = served_version(answer)
        if served != str(version):
            if active is not None:
                self.switch(proxy, slot_port(serving_port, active.slot))
            candidate.remove(force=True)
            raise DeploymentError(
                f"after the switch, {url} answered with model version {served!r}, expected {version}; "
                f"switched back to {active.version if active else 'nothing'}"
            )
        self.log.info("%s now serves version %s (%s) from %s", url, version, digest, candidate.name)
        for other in ([active] if active else []) + state.idle:
            if other.name != candidate.name:
                self.retire(other, drain_seconds=drain_seconds if other is active else 0)
        return {"changed": True, "serving_url": url, "container": candidate.name,
                "previous_version": active.version if active else None}
