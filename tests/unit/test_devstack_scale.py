"""devstack.scale starts a service again when it exits during start-up, and says why when it gives up."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack import scale
from devstack.base import StackContext, StackError
from devstack.util import port_listening

# Fails its first start (as Postgres does on a lock file it cannot take), then listens.
FLAKY_SERVICE = """
import pathlib, socket, sys, time
starts = pathlib.Path(sys.argv[1])
count = int(starts.read_text()) if starts.exists() else 0
starts.write_text(str(count + 1))
if count < int(sys.argv[3]):
    print(f"FATAL: start {count + 1} refused", flush=True)
    sys.exit(1)
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[2])))
server.listen()
print("listening", flush=True)
time.sleep(300)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def flaky(tmp_path):
    ctx = StackContext(state=tmp_path / "state")
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY_SERVICE)
    starts = tmp_path / "starts"
    yield ctx, lambda port, failures: [sys.executable, str(script), str(starts), str(port), str(failures)], starts
    ctx.stop("flaky", timeout=5)


def test_a_service_that_exits_during_start_up_is_started_again(flaky):
    ctx, argv, starts = flaky
    port = free_port()
    scale._start("flaky", argv(port, failures=1), port, ctx, backoff=0)
    assert starts.read_text() == "2"
    assert port_listening(port)


def test_giving_up_quotes_each_attempts_own_log(flaky):
    ctx, argv, starts = flaky
    port = free_port()
    with pytest.raises(StackError) as raised:
        scale._start("flaky", argv(port, failures=5), port, ctx, attempts=2, backoff=0)
    message = str(raised.value)
    assert "flaky: did not start in 2 attempts" in message
    assert "attempt 1: flaky: exited during start-up: FATAL: start 1 refused" in message
    assert "attempt 2: flaky: exited during start-up: FATAL: start 2 refused" in message
    assert "start 1 refused" not in message.split("attempt 2:")[1]
    assert starts.read_text() == "2"


def _lock(data, pid: int) -> None:
    data.mkdir(exist_ok=True)
    (data / "postmaster.pid").write_text(f"{pid}\n{data}\n1700000000\n{scale.PG_PORT}\n")


def test_a_lock_file_naming_another_live_process_is_removed(tmp_path):
    """Postgres would refuse to start on it for as long as that process (of its user) lives."""
    data = tmp_path / "data"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _lock(data, other.pid)
        scale._clear_stale_lock(data)
        assert not (data / "postmaster.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_a_lock_file_of_a_live_postmaster_on_the_same_data_is_kept_and_named(tmp_path):
    data = tmp_path / "data"
    postmaster = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-D", str(data)])
    cmdline = Path(f"/proc/{postmaster.pid}/cmdline")
    while b"-D" not in cmdline.read_bytes():  # empty for a moment after exec
        time.sleep(0.01)
    try:
        _lock(data, postmaster.pid)
        with pytest.raises(StackError, match=f"a postmaster \\(pid {postmaster.pid}\\) this stack did not start"):
            scale._clear_stale_lock(data)
        assert (data / "postmaster.pid").exists()
    finally:
        postmaster.kill()
        postmaster.wait()
