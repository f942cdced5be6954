"""Docker on the edge VM: an engine on /var/run/docker.sock.

If one already answers there it is used and not owned (never stopped). Otherwise Debian's docker.io
`dockerd` is started by the stack with `--bridge=none` (no bridge, no iptables: the stack's
containers and builds use host networking so every byte stays on 127.0.0.1), overlay2 storage
falling back to vfs when overlay2 cannot mount.
"""

from __future__ import annotations

import json
import shutil
import time

from devstack.base import Service, StackContext, StackError
from devstack.util import apt_install, pid_alive, stop_tree

SOCKET = "/var/run/docker.sock"
DOCKER_HOST = f"unix://{SOCKET}"
# dockerd from Debian bookworm speaks API 1.41; docker-py's default (1.45) is newer, so clients
# must negotiate ("auto").
API_VERSION = "auto"


def docker_client(timeout: int = 10):
    import docker

    return docker.DockerClient(base_url=DOCKER_HOST, version=API_VERSION, timeout=timeout)


def engine_answers() -> tuple[bool, str]:
    try:
        client = docker_client(timeout=5)
        try:
            info = client.info()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        return False, f"no engine answers on {SOCKET}: {type(exc).__name__}: {str(exc)[:160]}"
    return True, f"engine {info.get('ServerVersion')} (storage {info.get('Driver')})"


class DockerEngineService(Service):
    name = "dockerd"
    address = DOCKER_HOST
    start_timeout = 60.0

    def _driver_file(self, ctx: StackContext):
        return ctx.state / "docker-storage-driver"

    def owned(self, ctx: StackContext) -> bool:
        pid = ctx.running_pid(self.name)
        return pid is not None and pid_alive(pid)

    def install(self, ctx: StackContext) -> None:
        # docker-compose (Debian's) validates docker-compose.yaml in the tests; no engine needed for that.
        if shutil.which("docker-compose") is None:
            apt_install(["docker-compose"], what="dockerd (docker-compose)")
        if self.owned(ctx) or engine_answers()[0]:
            return
        if shutil.which("dockerd") is None:
            apt_install(["docker.io"], what="dockerd")
        if shutil.which("dockerd") is None:
            raise StackError("dockerd: `apt-get install docker.io` finished but dockerd is not on PATH")

    def _argv(self, driver: str) -> list[str]:
        return ["dockerd", "--host", DOCKER_HOST, "--bridge=none", "--iptables=false",
                "--ip6tables=false", "--ip-masq=false", "--storage-driver", driver]

    def start(self, ctx: StackContext) -> str:
        if self.owned(ctx):
            return f"{self.name}: already running at {self.address} (started by the stack)"
        ok, detail = engine_answers()
        if ok:
            return f"{self.name}: using the engine already on {SOCKET} ({detail}); not owned, never stopped"
        driver_file = self._driver_file(ctx)
        drivers = [driver_file.read_text().strip()] if driver_file.exists() else ["overlay2", "vfs"]
        last = ""
        for driver in drivers:
            pid = ctx.spawn(self.name, self._argv(driver))
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and pid_alive(pid):
                ok, last = engine_answers()
                if ok:
                    driver_file.write_text(driver + "\n")
                    return f"{self.name}: started at {self.address} (storage {driver})"
                time.sleep(0.3)
            log = ctx.log_file(self.name).read_text(errors="replace")[-600:]
            stop_tree(ctx, self.name)
            last = f"storage {driver}: {last}; log: {log}"
        raise StackError(f"{self.name}: dockerd did not come up with storage drivers {drivers}: {last}")

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        ok, detail = engine_answers()
        if ok and not self.owned(ctx):
            detail += ", not owned by the stack"
        return ok, detail

    def env(self, ctx: StackContext) -> dict[str, str]:
        return {
            "EDGE_DOCKER_HOST": DOCKER_HOST,
            "AIRFLOW_CONN_DOCKER_EDGE": json.dumps(
                {"conn_type": "generic", "host": DOCKER_HOST, "extra": {"network_mode": "host"}}),
        }

    def stop(self, ctx: StackContext) -> str:
        if not self.owned(ctx):
            ctx.pid_file(self.name).unlink(missing_ok=True)
            return f"{self.name}: not started by the stack; left alone"
        stop_tree(ctx, self.name, timeout=30)
        return f"{self.name}: stopped"
