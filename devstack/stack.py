"""Drives the stack's services in order: `up` (check ports, install, start, wait healthy, write
stack.env, after_up hooks), `status` (one line per service) and `down` (stop what `up` started)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
import traceback

from devstack import ports
from devstack.base import Service, StackContext, StackError
from devstack.util import descendants, format_env_file, pid_alive, port_conflicts, wait_until, write_private

ENV_HEADER = """\
The local edge stack's connections and settings, written by `python -m devstack up`.
Do not edit: regenerated on every `up`. Names are documented in devstack/STACK.md."""

DEFAULT_START_TIMEOUT = 90.0


def load_services(*, quiet: bool = False) -> tuple[list[Service], str | None]:
    """The services in start order, and why the AML double is missing (None when it is there)."""
    from devstack.services.azurite import AmlStorageService, StackHubBlobService
    from devstack.services.base_image import BaseImageService
    from devstack.services.docker_engine import DockerEngineService
    from devstack.services.edge_vm import EdgeVmService
    from devstack.services.hosts import HostsService
    from devstack.services.pki import PkiService
    from devstack.services.registry import RegistryService

    services: list[Service] = [
        HostsService(), PkiService(), StackHubBlobService(), AmlStorageService(), EdgeVmService(),
        DockerEngineService(), BaseImageService(), RegistryService(),
    ]
    missing = None
    try:
        from devstack.aml.stack_service import AmlDoubleService
    except ImportError as exc:
        missing = f"the AML double is not available yet (devstack.aml.stack_service: {exc})"
    else:
        services.append(AmlDoubleService())
    return services, missing


@contextlib.contextmanager
def stack_lock(ctx: StackContext):
    """One `up` or `down` at a time on this machine (others wait for it)."""
    ctx.state.mkdir(parents=True, exist_ok=True)
    with open(ctx.state / "stack.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("stack: another `up`/`down` is running; waiting for it", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _elapsed(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f}s"


def _is_running(ctx: StackContext, service: Service) -> bool:
    pid = ctx.running_pid(service.name)
    return pid is not None and pid_alive(pid)


def _refuse_taken_ports(ctx: StackContext, services: list[Service]) -> bool:
    """Print and return True when a port the stack needs is held by something it did not start."""
    ours = [s.name for s in services if _is_running(ctx, s)]
    for service in services:
        if service.name not in ours:
            for port in service.ports:
                ports.wait_for_time_wait(port)
    conflicts = port_conflicts({s.name: s.ports for s in services}, ours=ours)
    for line in conflicts:
        print(f"stack-up: {line}", file=sys.stderr)
    if conflicts:
        print("stack-up: stopped before starting anything; free the port(s) or stop what holds them",
              file=sys.stderr)
    return bool(conflicts)


def up(ctx: StackContext | None = None) -> int:
    ctx = ctx or StackContext()
    # Before anything binds or checks a port: no client is handed one of the stack's ports from here on.
    print(ports.reserve(), flush=True)
    # Checked before the lock too, so a refused `up` creates nothing at all.
    if _refuse_taken_ports(ctx, load_services()[0]):
        return 1
    with stack_lock(ctx):
        return _up(ctx)


def _up(ctx: StackContext) -> int:
    t_all = time.monotonic()
    services, missing = load_services()
    if missing:
        print(f"aml-double: {missing}; continuing without it", flush=True)
    if _refuse_taken_ports(ctx, services):
        return 1
    started: list[Service] = []
    current = None
    try:
        for service in services:
            current = service
            t0 = time.monotonic()
            was_running = _is_running(ctx, service)
            service.install(ctx)
            message = service.start(ctx)
            has_process = ctx.pid_file(service.name).exists()
            if not was_running and has_process:
                started.append(service)
            timeout = float(getattr(service, "start_timeout", DEFAULT_START_TIMEOUT))
            # A service with a process fails fast when that process dies during start-up.
            alive = (lambda s=service: _is_running(ctx, s)) if has_process else None
            detail = wait_until(lambda s=service: s.health(ctx), timeout=timeout, what=service.name,
                                alive=alive)
            ctx.env.update(service.env(ctx))
            print(f"{message}; healthy: {detail} [{_elapsed(t0)}]", flush=True)
        current = None
        env_file = ctx.state / "stack.env"
        write_private(env_file, format_env_file(ctx.env, header=ENV_HEADER))  # holds keys: 0600
        print(f"stack-up: wrote {env_file} ({len(ctx.env)} variables)", flush=True)
        for service in services:
            current = service
            service.after_up(ctx)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - roll back whatever failed
        where = current.name if current else "stack-up"
        if isinstance(exc, StackError):
            print(f"stack-up FAILED in {where}: {exc}", file=sys.stderr)
        else:
            print(f"stack-up FAILED in {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc()
        if current is not None:
            log = ctx.log_file(current.name)
            if log.exists():
                print(f"--- last lines of {log} ---\n{log.read_text(errors='replace')[-2000:]}",
                      file=sys.stderr)
        for service in reversed(started):
            print(f"stack-up: rolling back: {service.stop(ctx)}", file=sys.stderr)
        return 1
    print(f"stack-up: all {len(services)} services healthy [{_elapsed(t_all)}]", flush=True)
    return 0


def status(ctx: StackContext | None = None) -> int:
    ctx = ctx or StackContext()
    services, missing = load_services()
    width = max(len(s.name) for s in services)
    ok_all = True
    for service in services:
        try:
            ok, detail = service.health(ctx)
        except Exception as exc:  # noqa: BLE001 - a broken check is an unhealthy service
            ok, detail = False, f"health check raised {type(exc).__name__}: {exc}"
        ok_all &= ok
        word = "healthy" if ok else "UNHEALTHY"
        print(f"{service.name:<{width}}  {service.address:<58}  {word}: {detail}")
    if missing:
        print(f"{'aml-double':<{width}}  {'-':<58}  not started: {missing}")
    env_file = ctx.state / "stack.env"
    if not env_file.exists():
        print(f"stack.env missing: {env_file}")
        ok_all = False
    return 0 if ok_all else 1


STACK_BINARIES = {"node", "sshd", "dockerd", "docker-registry"}


def stack_processes(ctx: StackContext, *, vm_sessions: bool = False,
                    shims: bool = False) -> list[tuple[int, str]]:
    """Stack daemons still alive (for the `down` check): a stack binary whose command line points into
    this stack's state; with ``vm_sessions`` any process of the edge VM's user (its SSH sessions); with
    ``shims`` the container shims of the stack's own dockerd (they re-parent to init)."""
    import pwd

    from devstack.services.edge_vm import USER

    try:
        vm_uid = pwd.getpwnam(USER).pw_uid if vm_sessions else None
    except KeyError:
        vm_uid = None
    markers = (str(ctx.state) + "/",)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            uid = os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue
        if not argv or not pid_alive(int(entry)):
            continue
        cmd = " ".join(argv)
        # sshd rewrites its title to "sshd: /usr/sbin/sshd -D -f ... [listener] ...".
        binary = os.path.basename(argv[0].split()[0]).rstrip(":")
        if (binary in STACK_BINARIES and any(m in cmd for m in markers)) or (
                vm_uid is not None and uid == vm_uid) or (
                shims and binary.startswith("containerd-shim") and "moby" in cmd):
            found.append((int(entry), cmd))
    return found


def down(ctx: StackContext | None = None) -> int:
    ctx = ctx or StackContext()
    with stack_lock(ctx):
        return _down(ctx)


def _down(ctx: StackContext) -> int:
    services, missing = load_services()
    failed = False
    # Everything `up` started and everything those processes spawned, recorded before stopping.
    started: dict[int, str] = {}
    for service in services:
        pid = ctx.running_pid(service.name)
        if pid is not None and pid_alive(pid):
            for p in (pid, *descendants(pid)):
                started[p] = service.name
    for service in reversed(services):
        try:
            print(service.stop(ctx), flush=True)
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            failed = True
            print(f"{service.name}: stop failed: {exc}", file=sys.stderr)
    known = {s.name for s in services}
    leftovers = []
    if ctx.run_dir.exists():
        for pid_file in sorted(ctx.run_dir.glob("*.pid")):
            name = pid_file.stem
            if name not in known and ctx.running_pid(name):
                leftovers.append(f"{name} (pid {ctx.running_pid(name)}, {pid_file})")

    def survivors() -> list[tuple[int, str]]:
        alive = [(p, started[p]) for p in started if pid_alive(p)]
        alive += [(p, cmd) for p, cmd in stack_processes(ctx, vm_sessions="edge-vm-sshd" in started.values(),
                                                   shims="dockerd" in started.values())
                  if p not in started]
        return alive

    deadline = time.monotonic() + 5
    procs = survivors()
    while procs and time.monotonic() < deadline:
        time.sleep(0.2)
        procs = survivors()
    for pid, what in procs:
        print(f"stack-down: still running: pid {pid}: {what[:200]}", file=sys.stderr)
    for item in leftovers:
        print(f"stack-down: not a stack service, left running: {item}", file=sys.stderr)
    if procs or failed:
        return 1
    print("stack-down: no stack process left running")
    return 0
