"""Small helpers the stack services share: commands that fail loudly, apt, ports, secrets, env files."""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from devstack.base import STATE, StackContext, StackError

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def run(argv: list[str], *, what: str, check: bool = True, timeout: float | None = 600,
        env: Mapping[str, str] | None = None, cwd: Path | None = None,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a command; on failure raise StackError naming the service step, the command and its output."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})},
            cwd=str(cwd) if cwd else None, input=input,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what}: command not found: {shlex.join(argv)}") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: `{shlex.join(argv)}` did not finish within {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        out = (proc.stderr or b"").decode(errors="replace").strip() or (proc.stdout or b"").decode(
            errors="replace").strip()
        raise StackError(f"{what}: `{shlex.join(argv)}` exited {proc.returncode}: {out[-1500:]}")
    return proc


def dpkg_installed(package: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip().endswith("install ok installed")


_apt_updated = False


def apt_install(packages: Iterable[str], *, what: str) -> list[str]:
    """Install the Debian packages that are missing; returns those it installed."""
    global _apt_updated
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        raise StackError(f"{what}: packages {missing} are missing and apt-get is not available")
    print(f"{what}: installing {' '.join(missing)} (apt-get)", flush=True)
    if not _apt_updated:
        run(["apt-get", "update", "-q"], what=what, env=APT_ENV, timeout=900)
        _apt_updated = True
    # Packages like openssh-server and docker.io start their system daemons on install (sshd on
    # 0.0.0.0:22, a bridged dockerd). The stack runs its own instances, so forbid that for the
    # duration of the install, the way Debian container images do.
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\n# devstack: no service starts during apt-get install\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], what=what,
            env=APT_ENV, timeout=1800)
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)
    return missing


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port (we cannot bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_conflicts(wanted: Mapping[str, Iterable[int]], *, in_use: Callable[[int], bool] = port_in_use,
                   ours: Iterable[str] = ()) -> list[str]:
    """Messages for each port a service needs that something else holds.

    ``wanted`` maps service name to its ports; services in ``ours`` are already running under the
    stack's pid files, so their ports being taken is expected.
    """
    ours = set(ours)
    problems = []
    for name, ports in wanted.items():
        if name in ours:
            continue
        for port in ports:
            if in_use(port):
                problems.append(
                    f"port 127.0.0.1:{port} is already in use by a process the stack did not start; "
                    f"service {name} needs it"
                )
    return problems


def wait_until(check: Callable[[], tuple[bool, str]], *, timeout: float, interval: float = 0.25,
               alive: Callable[[], bool] | None = None, what: str = "") -> str:
    """Poll ``check`` until it reports healthy; raise StackError with the last reason otherwise."""
    deadline = time.monotonic() + timeout
    ok, detail = check()
    while not ok:
        if alive is not None and not alive():
            raise StackError(f"{what}: process exited before becoming healthy ({detail})")
        if time.monotonic() >= deadline:
            raise StackError(f"{what}: not healthy after {timeout:.0f}s ({detail})")
        time.sleep(interval)
        ok, detail = check()
    return detail


def quote_env_value(value: str) -> str:
    """Single-quote a value when the shell (and python-dotenv) would otherwise misread it."""
    if value and _SAFE_VALUE.match(value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def format_env_file(values: Mapping[str, str], *, header: str = "") -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, value in values.items():
        if not _KEY.match(key):
            raise StackError(f"stack.env: invalid variable name {key!r}")
        if "\n" in value or "\0" in value:
            raise StackError(f"stack.env: value of {key} contains a newline or NUL; expected one line")
        lines.append(f"{key}={quote_env_value(value)}")
    return "\n".join(lines) + "\n"


def parse_env_file(text: str) -> dict[str, str]:
    """The inverse of format_env_file (the same rules tests/conftest.py uses)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw)
        values[key.strip()] = parts[0] if parts else ""
    return values


#: What `devstack up` writes: every variable the stack's clients need (URLs, keys, connection ids).
STACK_ENV_FILE = STATE / "stack.env"


def read_stack_env(path: Path = STACK_ENV_FILE) -> dict[str, str]:
    """The running stack's variables; {} when the stack was never brought up. The one loader that
    devstack, the tests and the benchmarks use."""
    return parse_env_file(path.read_text()) if path.exists() else {}


def export_stack_env(values: Mapping[str, str]) -> None:
    """Put the stack's variables into this process's environment, leaving any already set alone."""
    for key, value in values.items():
        os.environ.setdefault(key, value)


def write_private(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write a file readable only by its owner (keys, passwords), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def stack_secret(ctx: StackContext, name: str, factory: Callable[[], str]) -> str:
    """A generated secret kept in .devstack/secrets.json: made once, then reused by every `up`."""
    path = ctx.state / "secrets.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    if name not in data:
        data[name] = factory()
        write_private(path, json.dumps(data, indent=2, sort_keys=True))
    return data[name]


def token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first walked breadth-first), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def stop_tree(ctx: StackContext, name: str, *, timeout: float = 15.0) -> bool:
    """Stop the process recorded for ``name`` and every process it spawned, all by pid."""
    import signal

    pid = ctx.running_pid(name)
    if pid is None:
        ctx.pid_file(name).unlink(missing_ok=True)
        return False
    tree = descendants(pid)
    stopped = ctx.stop(name, timeout=timeout)
    deadline = time.monotonic() + timeout
    for child in tree:
        if pid_alive(child):
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
    while any(pid_alive(c) for c in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child in tree:
        if pid_alive(child):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return stopped
