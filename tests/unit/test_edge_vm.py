"""Pure logic of the edge VM readiness checks: probe parsing, thresholds, sshd policy, quoting."""

from __future__ import annotations

import base64
import importlib.resources
import shlex
import subprocess

import pytest

from edge_training.exceptions import EdgeVMError
from edge_training.hooks.edge_vm_checks import (
    ReadinessParams,
    build_checks,
    clock_check,
    failure_summary,
    overall_status,
    parse_probe,
    render_probe,
    split_endpoint,
)


def encode(values: dict[str, str]) -> str:
    return "".join(f"{k}\t{base64.b64encode(v.encode()).decode()}\n" for k, v in values.items())


HEALTHY = {
    "user": "edgeops",
    "hostname": "vm",
    "docker_host": "default",
    "docker_rc": "0",
    "docker_out": "24.0.7",
    "image_rc": "0",
    "image_out": "sha256:0123456789abcdef0123 1073741824",
    "workdir": "/srv/work",
    "disk_path": "/srv/work",
    "workdir_exists": "1",
    "disk_writable": "1",
    "disk_avail_kib": str(50 * 1024 * 1024),
    "mem_avail_kib": str(8 * 1024 * 1024),
    "tcp_rc": "0",
    "tcp_out": "",
    "tcp_ms": "3",
    "sshd_config": "/etc/ssh/sshd_config",
    "sshd_opts": "",
    "sshd_login_rc": "0",
    "sshd_login_how": "user",
    "sshd_login_settings": "usepam=yes\npermitrootlogin=no\npasswordauthentication=no\nkbdinteractiveauthentication=no",
    "sshd_root_rc": "0",
    "sshd_root_how": "user",
    "sshd_root_settings": "usepam=yes\npermitrootlogin=no\npasswordauthentication=no\nkbdinteractiveauthentication=no",
    "done": "1",
}
PARAMS = ReadinessParams(image="edge-training-base:bookworm", blob_endpoint="edgedata.blob.local.azurestack.external:47101")


def by_name(checks):
    return {c["name"]: c for c in checks}


def test_parse_probe_roundtrips_multiline_values():
    text = encode({"a": "line1\nline2\ttab", "b": ""}) + "noise without tab\n"
    assert parse_probe(text) == {"a": "line1\nline2\ttab", "b": ""}


def test_healthy_probe_passes_every_check():
    checks = build_checks(parse_probe(encode(HEALTHY)), PARAMS)
    assert {c["status"] for c in checks} == {"pass"}
    names = by_name(checks)
    assert set(names) == {
        "docker_daemon", "docker_image", "disk_free_gib", "memory_free_gib",
        "blob_endpoint_tcp", "sshd_password_auth", "sshd_permit_root_login",
    }
    assert names["disk_free_gib"]["value"] == 50.0 and names["memory_free_gib"]["value"] == 8.0
    assert names["docker_image"]["value"] == "sha256:0123456789ab"
    for c in checks:
        assert set(c) == {"name", "threshold", "value", "status", "detail"}


def test_every_failure_is_reported_not_just_the_first():
    probe = dict(
        HEALTHY,
        docker_rc="1",
        docker_out="Cannot connect to the Docker daemon at unix:///nope.sock",
        disk_avail_kib=str(1024 * 1024),
        mem_avail_kib=str(512 * 1024),
        tcp_rc="1",
        tcp_out="connect: Connection refused",
        gpu_rc="127",
        gpu_out="nvidia-smi not found on PATH",
    )
    params = ReadinessParams(
        image="img:1", blob_endpoint="h:1", require_gpu=True, min_disk_gib=2, min_memory_gib=1
    )
    checks = by_name(build_checks(probe, params))
    failed = {n for n, c in checks.items() if c["status"] == "fail"}
    assert failed == {"docker_daemon", "docker_image", "disk_free_gib", "memory_free_gib", "blob_endpoint_tcp", "gpu"}
    assert "unix:///nope.sock" in checks["docker_daemon"]["detail"]
    assert "not checked" in checks["docker_image"]["detail"]
    report = {"host": "vm:22", "checks": list(checks.values())}
    summary = failure_summary(report)
    assert summary.startswith("edge VM vm:22 is not ready: 6 check(s) failed")
    for name in failed:
        assert name in summary


def test_missing_image_and_unwritable_disk():
    probe = dict(HEALTHY, image_rc="1", image_out="Error: No such image: img:1", disk_writable="0", workdir_exists="0", disk_path="/srv")
    checks = by_name(build_checks(probe, ReadinessParams(image="img:1")))
    assert checks["docker_image"]["status"] == "fail" and "No such image" in checks["docker_image"]["detail"]
    assert checks["disk_free_gib"]["status"] == "fail"
    assert "not writable" in checks["disk_free_gib"]["detail"] and "does not exist yet" in checks["disk_free_gib"]["detail"]


def test_truncated_probe_fails():
    probe = {k: v for k, v in HEALTHY.items() if k != "done"}
    assert by_name(build_checks(probe, PARAMS))["probe"]["status"] == "fail"


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_sshd_posture_follows_policy(policy):
    probe = dict(
        HEALTHY,
        sshd_login_settings="passwordauthentication=yes\nusepam=no\nkbdinteractiveauthentication=no",
        sshd_root_settings="permitrootlogin=prohibit-password\npasswordauthentication=yes",
    )
    checks = by_name(build_checks(probe, ReadinessParams(sshd_policy=policy)))
    assert checks["sshd_password_auth"]["status"] == policy and checks["sshd_password_auth"]["value"] == "yes"
    assert checks["sshd_permit_root_login"]["status"] == policy
    assert checks["sshd_permit_root_login"]["value"] == "prohibit-password"


def test_keyboard_interactive_with_pam_counts_as_password_auth():
    probe = dict(HEALTHY, sshd_login_settings="passwordauthentication=no\nkbdinteractiveauthentication=yes\nusepam=yes")
    check = by_name(build_checks(probe, ReadinessParams(sshd_policy="fail")))["sshd_password_auth"]
    assert check["status"] == "fail" and "PAM accepts passwords" in check["detail"]


def test_unknown_sshd_posture_is_reported_with_remedy():
    probe = dict(HEALTHY, sshd_login_rc="255", sshd_login_err="no hostkeys available", sshd_root_rc="255")
    checks = by_name(build_checks(probe, ReadinessParams(sshd_policy="warn")))
    assert checks["sshd_password_auth"]["status"] == "warn"
    assert "sudo -n /usr/sbin/sshd -T" in checks["sshd_password_auth"]["detail"]


def test_clock_check_bands():
    assert clock_check(0.2, 0.05, 30)["status"] == "pass"
    assert clock_check(-29.99, 0.05, 30)["status"] == "warn"  # could be beyond, within the uncertainty
    failing = clock_check(-45.0, 0.05, 30)
    assert failing["status"] == "fail" and "behind" in failing["detail"] and failing["value"] == -45.0


def test_overall_status():
    assert overall_status([{"status": "pass"}, {"status": "warn"}]) == "warn"
    assert overall_status([{"status": "warn"}, {"status": "fail"}]) == "fail"
    assert overall_status([{"status": "pass"}]) == "pass"


def test_params_validation():
    with pytest.raises(EdgeVMError, match="sshd_policy"):
        ReadinessParams(sshd_policy="ignore")
    with pytest.raises(EdgeVMError, match="min_disk_gib must be >= 0"):
        ReadinessParams(min_disk_gib=-1)
    assert split_endpoint("edgedata.blob.local.azurestack.external:47101") == ("edgedata.blob.local.azurestack.external", 47101)
    for bad in ("nohost", ":80", "h:0", "h:99999", "h;rm -rf /:80", "$(id):80"):
        with pytest.raises(EdgeVMError, match="blob endpoint"):
            split_endpoint(bad)


def test_probe_parameters_are_shell_quoted():
    """A hostile image name or workdir stays a value: bash reads back exactly what was given."""
    params = ReadinessParams(image="img'; touch /tmp/pwned; echo '", workdir="/tmp/$(id) `id`")
    script = render_probe(params)
    head = script.split("\nset -u", 1)[0]
    out = subprocess.run(["bash", "-c", head + '\nprintf "%s\\n%s" "$P_IMAGE" "$P_WORKDIR"'], capture_output=True, text=True, check=True)
    assert out.stdout == f"{params.image}\n{params.workdir}"
    assert shlex.quote(params.image) in script


def test_the_shipped_probe_file_is_what_runs():
    """render_probe sends probes/edge_vm_readiness.sh as shipped, after the P_* assignments, and bash parses it."""
    shipped = importlib.resources.files("edge_training.probes").joinpath("edge_vm_readiness.sh").read_text()
    assert shipped.startswith("#!/usr/bin/env bash\n") and shipped.endswith("\nemit done 1\n")
    body = shipped[shipped.index("\nset -u\n"):]
    params = ReadinessParams(image="img:1", workdir="/srv/work", blob_endpoint="blob.local:443", require_gpu=True)
    rendered = render_probe(params)
    assert rendered.endswith(shipped)
    head = rendered[: -len(shipped)].splitlines()
    names = [line.split("=", 1)[0] for line in head]
    assert names == ["P_IMAGE", "P_WORKDIR", "P_DOCKER_HOST", "P_DOCKER_TIMEOUT", "P_PULL", "P_BLOB_HOST",
                     "P_BLOB_PORT", "P_TCP_TIMEOUT", "P_GPU", "P_SSHD_CONFIG"]
    assert head[0] == "P_IMAGE=img:1" and "P_BLOB_HOST=blob.local" in head and "P_GPU=1" in head
    for name in names:
        assert name in body, f"the probe never reads {name}"
    syntax = subprocess.run(["bash", "-n"], input=rendered, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_password_auth_from_the_live_daemon_when_config_is_unreadable():
    probe = dict(
        HEALTHY,
        sshd_login_rc="255",
        sshd_login_err="/srv/sshd_config: Permission denied",
        sshd_root_rc="255",
        sshd_live_methods="publickey",
    )
    checks = by_name(build_checks(probe, ReadinessParams(sshd_policy="fail")))
    assert checks["sshd_password_auth"]["status"] == "pass" and "offers edgeops these methods: publickey" in checks["sshd_password_auth"]["detail"]
    assert checks["sshd_permit_root_login"]["status"] == "fail" and checks["sshd_permit_root_login"]["value"] is None
    probe["sshd_live_methods"] = "publickey,password"
    assert by_name(build_checks(probe, ReadinessParams(sshd_policy="warn")))["sshd_password_auth"]["status"] == "warn"
