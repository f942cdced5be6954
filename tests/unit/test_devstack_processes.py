"""Stopping by pid file also stops what the process spawned, even children that left its session."""

from __future__ import annotations

import time

from devstack.base import StackContext
from devstack.util import descendants, pid_alive, stop_tree


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stop_tree_stops_the_process_and_a_setsid_grandchild(tmp_path):
    ctx = StackContext(state=tmp_path)
    pid = ctx.spawn("probe", ["bash", "-c", "setsid sleep 300 & sleep 300 & wait"])
    assert _wait_for(lambda: len(descendants(pid)) >= 2)
    tree = descendants(pid)
    assert stop_tree(ctx, "probe", timeout=5)
    assert _wait_for(lambda: not any(pid_alive(p) for p in [pid, *tree]))
    assert not ctx.pid_file("probe").exists()
    assert ctx.running_pid("probe") is None
    assert stop_tree(ctx, "probe") is False


def test_running_pid_ignores_a_stale_pid_file(tmp_path):
    ctx = StackContext(state=tmp_path)
    ctx.run_dir.mkdir(parents=True)
    ctx.pid_file("gone").write_text("999999999\n")
    assert ctx.running_pid("gone") is None


def test_running_pid_sees_a_spawned_process_that_died_during_start_up(tmp_path):
    """Unreaped, the dead child is a zombie that answers signal 0: a start-up wait would run to its
    timeout and report "not listening" instead of the service's own error."""
    ctx = StackContext(state=tmp_path)
    ctx.spawn("dies", ["bash", "-c", "echo 'FATAL: lock file already exists'; exit 1"])
    assert _wait_for(lambda: ctx.running_pid("dies") is None, timeout=5)
