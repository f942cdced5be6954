"""`python -m devstack up|status` as users run them: status is green, a second up is a fast no-op,
and an up that finds a port taken names it and starts nothing."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

from devstack import ports, stack
from devstack.base import StackContext

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("hosts", "pki", "azurite-stackhub", "azurite-amlstore", "edge-vm-sshd", "dockerd",
            "base-image", "registry")
STACK_VARS = (
    "AIRFLOW_CONN_EDGE_VM_SSH", "AIRFLOW_CONN_STACKHUB_BLOB", "AIRFLOW_CONN_ACR_DEFAULT",
    "AIRFLOW_CONN_DOCKER_EDGE", "EDGE_STACKHUB_CONNECTION_STRING", "EDGE_STACKHUB_CONTAINER",
    "EDGE_STACKHUB_ACCOUNT", "EDGE_AMLSTORE_CONNECTION_STRING", "EDGE_CA_FILE", "EDGE_VM_HOST",
    "EDGE_VM_PORT", "EDGE_VM_USER", "EDGE_VM_KEY_FILE", "EDGE_VM_KNOWN_HOSTS", "EDGE_REGISTRY",
    "EDGE_REGISTRY_USER", "EDGE_REGISTRY_PASSWORD", "EDGE_REGISTRY_CA_FILE", "EDGE_DOCKER_HOST",
    "EDGE_BASE_IMAGE",
)


def devstack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_status_reports_every_service_healthy():
    proc = devstack("status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in SERVICES:
        line = next((l for l in lines if l.split()[:1] == [name]), None)
        assert line is not None and " healthy: " in line, f"{name}: {line}"


def test_second_up_is_a_fast_noop():
    t0 = time.monotonic()
    proc = devstack("up")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("azurite-stackhub", "azurite-amlstore", "edge-vm-sshd", "registry"):
        assert f"{name}: already running" in proc.stdout, proc.stdout
    assert "started at" not in proc.stdout
    assert elapsed < 60, f"a warm up took {elapsed:.1f}s"


def test_up_left_the_stack_ports_out_of_the_ephemeral_range():
    """What the kernel is told (the effect on the ports it hands out: tests/unit/test_devstack_ports.py)."""
    reserved = ports.parse_ranges(ports.RESERVED_PORTS.read_text())
    assert ports.covers(reserved, ports.STACK_PORTS), reserved
    assert "ports: 47100-47199 reserved" in devstack("up").stdout


def test_stack_env_has_every_documented_variable(stack_env):
    missing = [v for v in STACK_VARS if not stack_env.get(v)]
    assert not missing
    assert stack_env["EDGE_BASE_IMAGE"] == "edge-training-base:bookworm"
    assert stack_env["EDGE_STACKHUB_CONTAINER"] == "training"
    assert stack_env["EDGE_REGISTRY"] == "edgeacr.azsacr.local.azurestack.external:47150"
    assert stack_env["EDGE_STACKHUB_CONNECTION_STRING"].endswith(
        ";EndpointSuffix=local.azurestack.external:47101")


def test_up_with_ports_taken_names_them_and_starts_nothing(tmp_path):
    """A stack whose state is elsewhere sees the running stack's ports as someone else's."""
    ctx = StackContext(state=tmp_path / "state")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = stack.up(ctx)
    assert code == 1
    message = err.getvalue()
    assert "port 127.0.0.1:47101" in message and "azurite-stackhub" in message
    assert "port 127.0.0.1:47150" in message and "registry" in message
    assert not (tmp_path / "state").exists(), "a refused up must not create state or start anything"
    assert devstack("status").returncode == 0
