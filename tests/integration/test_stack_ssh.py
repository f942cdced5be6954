"""The edge VM's sshd through the SSH provider's hook: key-only, pinned host key, user edgeops."""

from __future__ import annotations

import json
import socket
import subprocess

import paramiko
import pytest
from airflow.providers.ssh.hooks.ssh import SSHHook


def run(hook: SSHHook, command: str) -> tuple[int, str, str]:
    with hook.get_conn() as client:
        _, out, err = client.exec_command(command, timeout=30)
        code = out.channel.recv_exit_status()
        return code, out.read().decode(), err.read().decode()


def test_command_runs_as_edgeops_in_the_docker_group(stack_env):
    conn = json.loads(stack_env["AIRFLOW_CONN_EDGE_VM_SSH"])
    assert conn["extra"]["no_host_key_check"] is False
    assert conn["extra"]["host_key"] == stack_env["EDGE_VM_HOST_KEY"]
    code, out, err = run(SSHHook(ssh_conn_id="edge_vm_ssh"), "id -un; id -nG; docker version --format '{{.Server.Os}}'")
    assert code == 0, err
    user, groups, docker_os = out.split("\n")[:3]
    assert user == "edgeops"
    assert "docker" in groups.split()
    assert docker_os == "linux"


def test_a_different_host_key_is_refused(stack_env, tmp_path, monkeypatch):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True)
    other = (tmp_path / "other.pub").read_text().split()
    conn = json.loads(stack_env["AIRFLOW_CONN_EDGE_VM_SSH"])
    conn["extra"]["host_key"] = f"{other[0]} {other[1]}"
    monkeypatch.setenv("AIRFLOW_CONN_EDGE_VM_SSH_WRONG_KEY", json.dumps(conn))
    hook = SSHHook(ssh_conn_id="edge_vm_ssh_wrong_key")
    with pytest.raises(paramiko.BadHostKeyException):
        run(hook, "true")


def test_known_hosts_pins_the_same_key(stack_env):
    line = open(stack_env["EDGE_VM_KNOWN_HOSTS"]).read().strip()
    assert line == f"[{stack_env['EDGE_VM_HOST']}]:{stack_env['EDGE_VM_PORT']} {stack_env['EDGE_VM_HOST_KEY']}"
    proc = subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", stack_env["EDGE_VM_KEY_FILE"], "-p", stack_env["EDGE_VM_PORT"],
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
         "-o", f"UserKnownHostsFile={stack_env['EDGE_VM_KNOWN_HOSTS']}",
         f"{stack_env['EDGE_VM_USER']}@{stack_env['EDGE_VM_HOST']}", "echo ok"],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _transport(stack_env) -> paramiko.Transport:
    sock = socket.create_connection((stack_env["EDGE_VM_HOST"], int(stack_env["EDGE_VM_PORT"])), timeout=10)
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=10)
    key_type, b64 = stack_env["EDGE_VM_HOST_KEY"].split()
    assert transport.get_remote_server_key().get_base64() == b64
    return transport


def test_password_authentication_is_refused(stack_env):
    transport = _transport(stack_env)
    try:
        with pytest.raises(paramiko.BadAuthenticationType) as err:
            transport.auth_password(stack_env["EDGE_VM_USER"], "any-password")
        assert err.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_root_cannot_log_in_even_with_the_client_key(stack_env):
    transport = _transport(stack_env)
    try:
        key = paramiko.Ed25519Key.from_private_key_file(stack_env["EDGE_VM_KEY_FILE"])
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_publickey("root", key)
    finally:
        transport.close()
