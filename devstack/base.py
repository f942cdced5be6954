"""The shape every devstack service follows, so `python -m devstack up|status|down` can drive them alike.

A service starts what it needs (idempotently: a second start finds it running and says so), reports
its health in one line, contributes variables to .devstack/stack.env, and is stopped by pid, only if
the stack started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".devstack"


class StackError(RuntimeError):
    """A stack service could not be installed, started or checked. The message names service and cause."""


@dataclass
class StackContext:
    """Paths and values shared by the services while the stack is brought up."""

    repo: Path = REPO
    state: Path = STATE
    # Values accumulated for stack.env, in insertion order.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def log_dir(self) -> Path:
        return self.state / "log"

    @property
    def pki_dir(self) -> Path:
        return self.state / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.pki_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.pki_dir / "server.key"

    @property
    def python(self) -> Path:
        return self.repo / ".venv" / "bin" / "python"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def running_pid(self, name: str) -> int | None:
        """The pid recorded for ``name`` if that process is still alive, else None.

        A process this one spawned and that has exited stays a zombie until reaped, and a zombie still
        answers signal 0: it is reaped here, so a service that dies during start-up is seen dead at once
        (and its log reported) rather than waited on as if it were still starting.
        """
        path = self.pid_file(name)
        if not path.exists():
            return None
        try:
            pid = int(path.read_text().strip())
        except ValueError:
            return None
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return None
        except ChildProcessError:
            pass  # not this process's child: signal 0 below answers for it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, inherit_env: bool = True) -> int:
        """Start a long-running process detached from the caller, recording its pid and log.

        ``env`` is added to this process's environment, or with ``inherit_env=False`` is the whole of it.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file(name), "ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(cwd or self.repo),
            env={**os.environ, **(env or {})} if inherit_env else dict(env or {}),
            start_new_session=True,
        )
        self.pid_file(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, name: str, *, timeout: float = 15.0) -> bool:
        """Stop the process recorded for ``name`` (TERM, then KILL). True when something was stopped."""
        pid = self.running_pid(name)
        self.pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # Reap if it is our child.
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True


class Service:
    """One stack service. Subclasses set ``name`` and ``address`` and implement the methods."""

    name: str = ""
    address: str = ""
    # Ports this service listens on (checked for conflicts before start).
    ports: tuple[int, ...] = ()

    def install(self, ctx: StackContext) -> None:
        """Install what is missing (apt, npm, files). Raise StackError naming the failed command."""

    def start(self, ctx: StackContext) -> str:
        """Start if not running. Return a one-line message ('started ...' or 'already running ...')."""
        raise NotImplementedError

    def health(self, ctx: StackContext) -> tuple[bool, str]:
        """(healthy, one-line detail or reason)."""
        raise NotImplementedError

    def env(self, ctx: StackContext) -> dict[str, str]:
        """Variables this service contributes to .devstack/stack.env."""
        return {}

    def after_up(self, ctx: StackContext) -> None:
        """Runs once every service is healthy and stack.env is written (e.g. seed registrations)."""

    def stop(self, ctx: StackContext) -> str:
        """Stop what this service started (by pid). Return a one-line message."""
        return f"{self.name}: stopped" if ctx.stop(self.name) else f"{self.name}: not running"
