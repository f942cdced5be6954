"""The `up`/`status`/`down` driver with small local services (real processes, no stack ports):
health waiting, stack.env writing, rollback of what a failed `up` started, and `down` by pid."""

from __future__ import annotations

import socket

import pytest

from devstack import stack
from devstack.base import Service, StackContext
from devstack.util import parse_env_file, pid_alive


class SleepService(Service):
    """A process that is healthy as soon as it runs."""

    def __init__(self, name: str, *, healthy: bool = True, ports: tuple[int, ...] = ()):
        self.name = name
        self.address = f"pid-file {name}"
        self.ports = ports
        self.healthy = healthy
        self.start_timeout = 1.0
        self.after_up_calls = 0

    def start(self, ctx):
        if ctx.running_pid(self.name):
            return f"{self.name}: already running"
        ctx.spawn(self.name, ["sleep", "300"])
        return f"{self.name}: started"

    def health(self, ctx):
        if not self.healthy:
            return False, "configured to fail"
        return (ctx.running_pid(self.name) is not None), "sleeping"

    def env(self, ctx):
        return {f"TEST_{self.name.upper()}": f"value of {self.name}; with 'quotes'"}

    def after_up(self, ctx):
        self.after_up_calls += 1


@pytest.fixture
def ctx(tmp_path):
    return StackContext(state=tmp_path / "state")


def use(monkeypatch, services):
    monkeypatch.setattr(stack, "load_services", lambda **_: (services, None))


def test_up_writes_env_then_second_up_reports_running_and_down_stops(ctx, monkeypatch, capsys):
    a, b = SleepService("alpha"), SleepService("beta")
    use(monkeypatch, [a, b])
    assert stack.up(ctx) == 0
    env = parse_env_file((ctx.state / "stack.env").read_text())
    assert env == {"TEST_ALPHA": "value of alpha; with 'quotes'", "TEST_BETA": "value of beta; with 'quotes'"}
    assert a.after_up_calls == b.after_up_calls == 1
    pids = [ctx.running_pid("alpha"), ctx.running_pid("beta")]
    capsys.readouterr()
    assert stack.up(ctx) == 0
    out = capsys.readouterr().out
    assert "alpha: already running" in out and "beta: already running" in out
    assert [ctx.running_pid("alpha"), ctx.running_pid("beta")] == pids
    assert stack.status(ctx) == 0
    assert stack.down(ctx) == 0
    assert not any(pid_alive(p) for p in pids)
    assert stack.status(ctx) == 1


def test_failed_up_stops_what_it_started_and_keeps_what_ran_before(ctx, monkeypatch, capsys):
    before = SleepService("before")
    use(monkeypatch, [before])
    assert stack.up(ctx) == 0
    kept = ctx.running_pid("before")
    started, broken = SleepService("started"), SleepService("broken", healthy=False)
    use(monkeypatch, [before, started, broken])
    assert stack.up(ctx) == 1
    err = capsys.readouterr().err
    assert "FAILED in broken" in err and "configured to fail" in err
    assert ctx.running_pid("started") is None and ctx.running_pid("broken") is None
    assert ctx.running_pid("before") == kept
    stack.down(ctx)


def test_taken_port_is_named_and_nothing_starts(ctx, monkeypatch, capsys):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        use(monkeypatch, [SleepService("first"), SleepService("needs-port", ports=(port,))])
        assert stack.up(ctx) == 1
    err = capsys.readouterr().err
    assert f"port 127.0.0.1:{port}" in err and "needs-port" in err
    assert not ctx.run_dir.exists()


class CrashingService(SleepService):
    """Its process exits at once; its log says why."""

    def start(self, ctx):
        ctx.spawn(self.name, ["sh", "-c", "echo 'cannot bind: permission denied'; exit 3"])
        return f"{self.name}: started"

    def health(self, ctx):
        return False, "not answering"


def test_a_process_that_dies_during_start_fails_fast_with_its_log(ctx, monkeypatch, capsys):
    import time

    crashing = CrashingService("crashing")
    crashing.start_timeout = 60.0
    use(monkeypatch, [SleepService("ok"), crashing])
    t0 = time.monotonic()
    assert stack.up(ctx) == 1
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    assert "FAILED in crashing" in err and "process exited" in err
    assert "cannot bind: permission denied" in err
    assert ctx.running_pid("ok") is None
    assert not ctx.pid_file("crashing").exists(), "the crashed service's pid file was left behind"
