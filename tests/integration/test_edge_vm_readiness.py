"""EdgeVMReadinessOperator against the stack's sshd (the edge VM) and dockerd, each check failing for real."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from edge_training.exceptions import EdgeVMError, EdgeVMNotReadyError, HostKeyMismatchError
from edge_training.hooks.edge_vm import EdgeVMHook
from edge_training.hooks.edge_vm_checks import ReadinessParams
from edge_training.operators.edge_vm import REPORT_XCOM_KEY, EdgeVMReadinessOperator

ALL_CHECKS = {
    "ssh", "clock_skew_s", "docker_daemon", "docker_image", "disk_free_gib", "memory_free_gib",
    "blob_endpoint_tcp", "sshd_password_auth", "sshd_permit_root_login",
}


class RecordingTI:
    """Stands in for the task instance's XCom push only (the VM and sshd are real)."""

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


@pytest.fixture(scope="module")
def image(stack_env):
    return stack_env.get("EDGE_BASE_IMAGE") or "edge-training-base:bookworm"


def run(image: str, **kwargs):
    ti = RecordingTI()
    kwargs.setdefault("workdir", "/tmp/edge-training-work")
    kwargs.setdefault("sshd_policy", "fail")
    op = EdgeVMReadinessOperator(task_id="check_edge_vm", image=image, **kwargs)
    try:
        result = op.execute({"ti": ti})
        return result, ti.xcom[REPORT_XCOM_KEY], None
    except EdgeVMNotReadyError as err:
        return None, ti.xcom[REPORT_XCOM_KEY], err


def checks(report):
    return {c["name"]: c for c in report["checks"]}


def fingerprint(pub_file: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub_file)], capture_output=True, text=True, check=True).stdout
    return out.split()[1]  # "256 SHA256:... comment (ED25519)"


def conn_with(stack_env, monkeypatch, name: str, **changes) -> str:
    conn = json.loads(stack_env["AIRFLOW_CONN_EDGE_VM_SSH"])
    extra = {**conn["extra"], **changes.pop("extra", {})}
    conn.update(changes)
    conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", json.dumps(conn))
    return name


def test_healthy_vm_passes(image, stack_env):
    # The DAG's default posture policy: an sshd setting that cannot be read is a warning.
    result, report, err = run(image, sshd_policy="warn")
    assert err is None, str(err)
    assert result == report and report["status"] in ("pass", "warn")
    assert set(checks(report)) == ALL_CHECKS
    c = checks(report)
    assert {c[n]["status"] for n in ALL_CHECKS - {"sshd_permit_root_login"}} == {"pass"}
    # Password auth is verified either from `sshd -T` or, when the config is unreadable, live.
    assert c["sshd_password_auth"]["value"] == "no"
    root = c["sshd_permit_root_login"]
    assert (root["status"], root["value"]) == ("pass", "no") or (
        root["status"] == "warn" and root["value"] is None and "sudo -n /usr/sbin/sshd -T" in root["detail"]
    )
    assert report["host"] == f"{stack_env['EDGE_VM_HOST']}:{stack_env['EDGE_VM_PORT']}"
    tcp = checks(report)["blob_endpoint_tcp"]
    assert tcp["threshold"] == "edgedata.blob.local.azurestack.external:47101"  # from the stackhub_blob connection
    assert checks(report)["docker_image"]["threshold"] == image
    json.dumps(report)


def test_thresholds_above_what_the_vm_has_fail_and_are_all_listed(image):
    _, report, err = run(image, min_disk_gib=1000000, min_memory_gib=10000, max_clock_skew_s=30, sshd_policy="warn")
    assert err is not None
    c = checks(report)
    assert c["disk_free_gib"]["status"] == "fail" and c["disk_free_gib"]["threshold"] == 1000000.0
    assert c["memory_free_gib"]["status"] == "fail"
    assert c["docker_daemon"]["status"] == "pass"  # the others still ran and passed
    message = str(err)
    assert "2 check(s) failed" in message and "disk_free_gib" in message and "memory_free_gib" in message


def test_docker_pointed_at_a_wrong_socket_fails(image):
    _, report, err = run(image, docker_host="unix:///tmp/edge-training-no-such-docker.sock")
    c = checks(report)
    assert c["docker_daemon"]["status"] == "fail"
    assert "unix:///tmp/edge-training-no-such-docker.sock" in c["docker_daemon"]["detail"]
    assert c["docker_image"]["status"] == "fail" and "not checked" in c["docker_image"]["detail"]
    assert "docker_daemon" in str(err)


def test_missing_training_image_fails():
    _, report, err = run("edge-training-no-such-image:never")
    c = checks(report)
    assert c["docker_daemon"]["status"] == "pass"
    assert c["docker_image"]["status"] == "fail" and "is not present on the VM" in c["docker_image"]["detail"]


def test_unreachable_blob_endpoint_fails_from_the_vm(image):
    _, report, err = run(image, blob_endpoint="edgedata.blob.local.azurestack.external:1")
    c = checks(report)["blob_endpoint_tcp"]
    assert c["status"] == "fail" and "Connection refused" in c["detail"]


def test_required_gpu_missing_fails(image):
    _, report, err = run(image, require_gpu=True)
    c = checks(report)["gpu"]
    assert c["status"] == "fail" and c["value"] == 0 and "gpu" in str(err)


def test_clock_skew_beyond_threshold_fails():
    """The VM's clock is real; the Airflow host's reference clock is skewed by two minutes."""
    hook = EdgeVMHook(reference_clock=lambda: time.time() - 120)
    report = hook.readiness_report(ReadinessParams(max_clock_skew_s=30))
    c = checks(report)["clock_skew_s"]
    assert c["status"] == "fail" and 119 < c["value"] < 121 and "ahead of" in c["detail"]
    assert report["status"] == "fail"


def test_wrong_host_key_is_refused_naming_host_and_both_fingerprints(stack_env, monkeypatch, tmp_path, image):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other_pub = (tmp_path / "other.pub").read_text().split()
    conn_id = conn_with(stack_env, monkeypatch, "edge_vm_wrongkey", extra={"host_key": f"{other_pub[0]} {other_pub[1]}"})
    real = fingerprint(Path(stack_env["EDGE_VM_KEY_FILE"]).parent / "ssh_host_ed25519_key.pub")
    pinned = fingerprint(tmp_path / "other.pub")
    op = EdgeVMReadinessOperator(task_id="check_edge_vm", ssh_conn_id=conn_id, image=image)
    with pytest.raises(HostKeyMismatchError) as err:
        op.execute({"ti": RecordingTI()})
    message = str(err.value)
    assert f"{stack_env['EDGE_VM_HOST']}:{stack_env['EDGE_VM_PORT']}" in message
    assert real in message and pinned in message and message.index(real) < message.index(pinned)


def test_connection_without_host_key_check_is_refused(stack_env, monkeypatch):
    conn = json.loads(stack_env["AIRFLOW_CONN_EDGE_VM_SSH"])
    conn["extra"].pop("host_key")
    conn["extra"]["no_host_key_check"] = True
    monkeypatch.setenv("AIRFLOW_CONN_EDGE_VM_NOCHECK", json.dumps(conn))
    with pytest.raises(EdgeVMError, match="disables host key verification"):
        EdgeVMHook(ssh_conn_id="edge_vm_nocheck").readiness_report(ReadinessParams())


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def test_unreachable_vm_is_retried_a_bounded_number_of_times(stack_env, monkeypatch, image):
    port = free_port(47199)  # nothing listens there
    conn_id = conn_with(stack_env, monkeypatch, "edge_vm_down", port=port)
    op = EdgeVMReadinessOperator(task_id="check_edge_vm", ssh_conn_id=conn_id, image=image, connect_attempts=2)
    ti = RecordingTI()
    with pytest.raises(EdgeVMNotReadyError, match="ssh"):
        op.execute({"ti": ti})
    c = checks(ti.xcom[REPORT_XCOM_KEY])["ssh"]
    assert c["status"] == "fail" and "2 attempt(s)" in c["detail"]
    assert set(checks(ti.xcom[REPORT_XCOM_KEY])) == {"ssh"}


def test_refused_authentication_is_not_retried(stack_env, monkeypatch, tmp_path, image):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    conn_id = conn_with(stack_env, monkeypatch, "edge_vm_stranger", extra={"key_file": str(tmp_path / "stranger")})
    hook = EdgeVMHook(ssh_conn_id=conn_id, connect_attempts=3, retry_backoff_s=5)
    started = time.monotonic()
    with pytest.raises(EdgeVMError, match="refused authentication"):
        hook.readiness_report(ReadinessParams(image=image))
    assert time.monotonic() - started < 5  # a retry would have slept 5 s first


@pytest.fixture
def password_sshd(stack_env):
    """A second sshd on loopback with PasswordAuthentication yes (same host key), stopped after the test."""
    port = free_port(47123)
    base = Path(stack_env["EDGE_VM_KEY_FILE"]).parent
    workdir = Path(tempfile.mkdtemp(prefix="edge-vm-pwauth-"))
    workdir.chmod(0o755)  # the login user must read the config, as on a real VM
    # The stack keeps sshd_config readable by the VM user, beside (not inside) the 0700 key folder.
    stack_cfg = (base.parent / "sshd" / "sshd_config").read_text().splitlines()
    keep = [
        line for line in stack_cfg
        if line.split(" ")[0] not in ("ListenAddress", "PidFile", "PasswordAuthentication", "PermitRootLogin")
    ]
    cfg = workdir / "sshd_config"
    cfg.write_text(
        "\n".join(
            [
                f"ListenAddress 127.0.0.1:{port}",
                f"PidFile {workdir}/sshd.pid",
                "PasswordAuthentication yes",
                "PermitRootLogin prohibit-password",
                *keep,
            ]
        )
        + "\n"
    )
    cfg.chmod(0o644)
    proc = subprocess.Popen(
        [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-f", str(cfg), "-E", str(workdir / "sshd.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"second sshd did not start: {(workdir / 'sshd.log').read_text()}")
                time.sleep(0.1)
        yield port, cfg
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_password_auth_enabled_fails_by_policy(password_sshd, stack_env, monkeypatch, image):
    port, cfg = password_sshd
    conn_id = conn_with(stack_env, monkeypatch, "edge_vm_pwauth", port=port)
    _, report, err = run(image, ssh_conn_id=conn_id, sshd_policy="fail")
    c = checks(report)
    assert c["sshd_password_auth"]["status"] == "fail" and c["sshd_password_auth"]["value"] == "yes"
    assert str(cfg) in c["sshd_password_auth"]["detail"]  # read from the daemon that served the session
    assert c["sshd_permit_root_login"]["status"] == "fail"
    assert c["sshd_permit_root_login"]["value"] in ("without-password", "prohibit-password")  # sshd -T spells it either way
    assert "sshd_password_auth" in str(err) and "sshd_permit_root_login" in str(err)

    # Under the warn policy the same VM passes with warnings.
    result, report, err = run(image, ssh_conn_id=conn_id, sshd_policy="warn")
    assert err is None and result["status"] == "warn"
    assert checks(report)["sshd_password_auth"]["status"] == "warn"


def test_missing_image_that_cannot_be_pulled_fails_naming_the_pull_error():
    """pull_missing_image tries a real `docker pull` on the VM; nothing listens on 127.0.0.1:1."""
    _, report, err = run("127.0.0.1:1/edge-training-no-such-image:never", pull_missing_image=True)
    c = checks(report)["docker_image"]
    assert c["status"] == "fail" and "pull failed" in c["detail"] and "127.0.0.1:1" in c["detail"]
