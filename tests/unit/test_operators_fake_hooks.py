"""Every operator's execute path with no stack: fakes that behave, placed under the real hooks.

Each fake stands where the hook meets the outside world, so the operator *and* its hook's own logic
run against something that keeps state and answers the way the real thing does (no call recording
standing in for behaviour):

- EdgeVMReadinessOperator -> EdgeVMHook -> FakeSSHHook (in place of the SSH provider's SSHHook),
  connected to a FakeVM. The VM answers ``date`` from its own clock and ``bash -s`` by reading the
  parameters the hook rendered on top of the shipped probe and observing its own state (disk, memory,
  Docker, images, what it can reach, sshd), replying in the probe's ``key<TAB>base64`` format; the
  real edge_vm_checks builders then turn that into the report.
- StackHubPartitionOperator -> StackHubBlobHook -> the SDK's real BlobServiceClient (so the real
  endpoint URL meets the locality policy), whose get_container_client returns a FakeContainerClient
  over an in-memory account (blobs by name, ranged downloads, staged block uploads, the account key).
- ModelImageBuildOperator / ModelImagePushOperator -> ContainerImageHook -> FakeDocker (in place of
  docker.DockerClient: builds from the real Dockerfile's ARG/FROM/COPY/LABEL lines, tags, runs smoke
  containers, pushes) and FakeRegistry (in place of RegistryClient: tags -> manifests -> config labels).

Connections come from AIRFLOW_CONN_* variables this file sets per test under its own ids, so neither
the dev stack nor its connections are needed.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import itertools
import json
import posixpath
import re
import shlex
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow.sdk import DAG
from edge_training.exceptions import (
    OperatorArgumentError,
    ContainerImageError,
    EdgeVMAuthError,
    EdgeVMNotReadyError,
    HostKeyMismatchError,
    LocalityPolicyError,
    PartitionIncompleteError,
    RegistryAuthError,
    RegistryPushError,
    SchemaDriftError,
    SmokeTestError,
    StackHubAuthError,
    StackHubError,
)
from edge_training.triggers.events import EVENT_ERROR, EVENT_SUCCESS, EVENT_TIMEOUT


# =================================================================================================
# The Airflow side: a task instance with XCom in a dict, a context, template rendering
# =================================================================================================
class FakeTI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom stores JSON: a value that cannot be serialised would fail the task
        self.xcom[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)


def make_context(**extra: Any) -> dict[str, Any]:
    ti = FakeTI()
    return {"ti": ti, "task_instance": ti, "params": {}, "run_id": "scheduled__2026-11-10T02:00:00+00:00", **extra}


def run(op, context: dict[str, Any]) -> Any:
    """What the task runner does: render the templated fields, then execute; the result is XCom-safe."""
    if not op.has_dag():  # rendered as the DAG renders (render_template_as_native_obj=True)
        op.dag = DAG(dag_id=f"native_{op.task_id}", schedule=None, render_template_as_native_obj=True)
    op.render_template_fields(context)
    result = op.execute(context)
    json.dumps(result)
    return result


def set_conn(monkeypatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


# =================================================================================================
# Edge VM: FakeVM behind a FakeSSHHook
# =================================================================================================
GIB_KIB = 1024 * 1024
BASE_IMAGE = "edge-training-base:bookworm"
STACKHUB_DOMAIN = "local.azurestack.external"
BLOB_HOST = f"edgedata.blob.{STACKHUB_DOMAIN}"
BLOB_ENDPOINT = f"{BLOB_HOST}:443"
PINNED_KEY_SEED = 1  # the host key the (fake) SSH connection pins
PUBLIC_REFUSED = r"edgedata\.blob\.core\.windows\.net is a public Azure cloud endpoint"


def ed25519_key(seed: int):
    import paramiko

    def ssh_string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    return paramiko.PKey.from_type_string("ssh-ed25519", ssh_string(b"ssh-ed25519") + ssh_string(bytes([seed]) * 32))


@dataclass
class FakeVM:
    """An edge VM's state, and what the probe would observe on it."""

    user: str = "edgeops"
    hostname: str = "edge-vm-01"
    address: str = "10.20.0.5"
    port: int = 22
    host_key_seed: int = PINNED_KEY_SEED
    up: bool = True
    accepts_key: bool = True  # the connection's key is in the login user's authorized_keys
    clock_offset_s: float = 0.0
    docker_up: bool = True
    docker_version: str = "27.3.1"
    images: dict[str, tuple[str, int]] = field(
        default_factory=lambda: {BASE_IMAGE: ("sha256:" + "ab" * 32, 1_610_612_736)}
    )
    pullable: set[str] = field(default_factory=set)  # images a registry would serve to `docker pull`
    home: str = "/home/edgeops"
    dirs: dict[str, bool] = field(  # existing directories -> writable by the login user
        default_factory=lambda: {"/": False, "/home": False, "/home/edgeops": True, "/srv": False}
    )
    disk_free_gib: float = 80.0
    mem_free_gib: float = 6.0
    listening: set[str] = field(default_factory=lambda: {BLOB_ENDPOINT})  # host:port the VM can open
    gpus: list[str] = field(default_factory=list)
    password_authentication: str = "no"
    permit_root_login: str = "no"
    # What happened to it
    connects: int = 0
    commands: list[str] = field(default_factory=list)
    probe_params: dict[str, str] = field(default_factory=dict)
    open_sessions: int = 0

    def run(self, command: str, stdin: str) -> tuple[int, str, str]:
        from edge_training.hooks.edge_vm_checks import PROBE_SCRIPT

        self.commands.append(command)
        if command == "date +%s.%N":
            return 0, f"{time.time() + self.clock_offset_s:.9f}\n", ""
        if command == "bash -s":
            head, sep, rest = stdin.partition(PROBE_SCRIPT)
            assert sep and not rest, "the VM was not sent the shipped probe script"
            self.probe_params = {}
            for line in head.splitlines():
                key, _, value = line.partition("=")
                self.probe_params[key] = "".join(shlex.split(value))
            found = self.probe(self.probe_params)
            return 0, "".join(f"{k}\t{base64.b64encode(str(v).encode()).decode()}\n" for k, v in found.items()), ""
        return 127, "", f"bash: {command.split()[0]}: command not found\n"

    def probe(self, p: dict[str, str]) -> dict[str, Any]:
        """What probes/edge_vm_readiness.sh prints on this VM, key by key, in its order."""
        out: dict[str, Any] = {"user": self.user, "hostname": self.hostname}
        out["docker_host"] = p["P_DOCKER_HOST"] or "default"
        if self.docker_up:
            out.update(docker_rc=0, docker_out=self.docker_version)
            image = p["P_IMAGE"]
            if image:
                if image not in self.images and p["P_PULL"] == "1":
                    if image in self.pullable:
                        self.images[image] = ("sha256:" + hashlib.sha256(image.encode()).hexdigest(), 734_003_200)
                        out.update(image_pull_rc=0, image_pull_out=self.images[image][0])
                    else:
                        out.update(
                            image_pull_rc=1,
                            image_pull_out=f"Error response from daemon: pull access denied for {image.split(':')[0]}",
                        )
                if image in self.images:
                    image_id, size = self.images[image]
                    out.update(image_rc=0, image_out=f"{image_id} {size}")
                else:
                    out.update(image_rc=1, image_out=f"Error response from daemon: No such image: {image}")
        else:
            out.update(
                docker_rc=1,
                docker_out="Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                "Is the docker daemon running?",
            )
        wd = p["P_WORKDIR"] or self.home
        if wd == "~" or wd.startswith("~/"):
            wd = self.home + wd[1:]
        d = wd
        while d not in self.dirs and d not in ("/", "."):
            d = posixpath.dirname(d)
        out.update(
            workdir=wd,
            disk_path=d,
            workdir_exists=int(wd in self.dirs),
            disk_writable=int(self.dirs.get(d, False)),
            disk_avail_kib=int(self.disk_free_gib * GIB_KIB),
            mem_avail_kib=int(self.mem_free_gib * GIB_KIB),
        )
        if p["P_BLOB_HOST"]:
            host, port = p["P_BLOB_HOST"], p["P_BLOB_PORT"]
            if f"{host}:{port}" in self.listening:
                out.update(tcp_rc=0, tcp_out="", tcp_ms=3)
            else:
                refused = f"bash: line 1: connect: Connection refused\n/dev/tcp/{host}/{port}"
                out.update(tcp_rc=1, tcp_out=refused, tcp_ms=1)
        if p["P_GPU"] == "1":
            if self.gpus:
                out.update(gpu_rc=0, gpu_out="\n".join(self.gpus))
            else:
                out.update(gpu_rc=127, gpu_out="nvidia-smi not found on PATH")
        settings = (
            f"usepam=yes\npermitrootlogin={self.permit_root_login}\n"
            f"passwordauthentication={self.password_authentication}\nkbdinteractiveauthentication=no"
        )
        out.update(
            sshd_listener="sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
            sshd_config=p["P_SSHD_CONFIG"] or "/etc/ssh/sshd_config",
            sshd_opts="",
            sshd_login_rc=0,
            sshd_login_how="user",
            sshd_login_settings=settings,
            sshd_root_rc=0,
            sshd_root_how="user",
            sshd_root_settings=settings,
            done=1,
        )
        return out


class _Session:
    """One exec_command: stdin is collected until shutdown_write, then the VM runs the command."""

    def __init__(self, vm: FakeVM, command: str) -> None:
        self.vm, self.command = vm, command
        self.stdin: list[str] = []
        self.result: tuple[int, bytes, bytes] | None = None
        self.channel = SimpleNamespace(shutdown_write=self.finish, recv_exit_status=lambda: self.finish()[0])

    def finish(self) -> tuple[int, bytes, bytes]:
        if self.result is None:
            rc, out, err = self.vm.run(self.command, "".join(self.stdin))
            self.result = (rc, out.encode(), err.encode())
        return self.result


class _File:
    def __init__(self, session: _Session, index: int) -> None:
        self.session, self.index, self.channel = session, index, session.channel

    def write(self, text: str) -> None:
        assert self.session.result is None, "stdin written after the command ran"
        self.session.stdin.append(text)

    def read(self) -> bytes:
        return self.session.finish()[self.index]


class FakeSSHClient:
    def __init__(self, vm: FakeVM) -> None:
        self.vm, self.closed = vm, False
        vm.open_sessions += 1

    def get_transport(self):
        return SimpleNamespace(get_remote_server_key=lambda: ed25519_key(self.vm.host_key_seed))

    def exec_command(self, command: str, timeout: float | None = None):
        assert not self.closed
        session = _Session(self.vm, command)
        return _File(session, 0), _File(session, 1), _File(session, 2)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.vm.open_sessions -= 1


class FakeSSHHook:
    """The SSH provider's SSHHook as EdgeVMHook uses it: the connection's fields and get_conn()."""

    def __init__(self, vm: FakeVM, *, ssh_conn_id: str, conn_retry_attempts: int = 1, **_: Any) -> None:
        self.vm, self.ssh_conn_id = vm, ssh_conn_id
        self.remote_host, self.port, self.username = vm.address, vm.port, vm.user
        self.conn_timeout = 10
        self.host_key = ed25519_key(PINNED_KEY_SEED)
        self.no_host_key_check = False
        self.allow_host_key_change = False
        self.client = None

    def get_conn(self) -> FakeSSHClient:
        self.vm.connects += 1
        if not self.vm.up:
            raise OSError(113, "No route to host")
        if not self.vm.accepts_key:
            import paramiko

            raise paramiko.AuthenticationException("Authentication failed.")
        self.client = FakeSSHClient(self.vm)
        return self.client


@pytest.fixture
def vm(monkeypatch) -> FakeVM:
    from airflow.providers.ssh.hooks import ssh as ssh_provider

    the_vm = FakeVM()
    monkeypatch.setattr(ssh_provider, "SSHHook", lambda **kwargs: FakeSSHHook(the_vm, **kwargs))
    return the_vm


def readiness_op(**kwargs: Any):
    from edge_training.operators.edge_vm import EdgeVMReadinessOperator

    kwargs.setdefault("image", BASE_IMAGE)
    kwargs.setdefault("blob_endpoint", BLOB_ENDPOINT)
    kwargs.setdefault("stackhub_conn_id", None)
    return EdgeVMReadinessOperator(task_id="check_edge_vm", ssh_conn_id="fake_edge_vm", **kwargs)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def failed(report: dict[str, Any]) -> list[str]:
    return [c["name"] for c in report["checks"] if c["status"] == "fail"]


def test_healthy_vm_report_is_returned_and_pushed(vm):
    op = readiness_op(min_disk_gib="{{ params.min_disk_gib }}", min_memory_gib="{{ params.min_memory_gib }}")
    ctx = make_context(params={"min_disk_gib": 20, "min_memory_gib": 2})
    report = run(op, ctx)

    assert report["status"] == "pass"
    assert ctx["ti"].xcom["readiness_report"] == report
    assert report["host"] == "10.20.0.5:22" and report["user"] == "edgeops"
    checks = by_name(report)
    assert list(checks) == [
        "ssh", "clock_skew_s", "docker_daemon", "docker_image", "disk_free_gib", "memory_free_gib",
        "blob_endpoint_tcp", "sshd_password_auth", "sshd_permit_root_login",
    ]
    assert all(c["status"] == "pass" for c in report["checks"]), report["checks"]
    assert (checks["disk_free_gib"]["threshold"], checks["disk_free_gib"]["value"]) == (20.0, 80.0)
    assert (checks["memory_free_gib"]["threshold"], checks["memory_free_gib"]["value"]) == (2.0, 6.0)
    assert checks["docker_image"]["value"] == "sha256:abababababab"
    assert "edgeops on edge-vm-01" in checks["ssh"]["detail"]
    # One SSH session, the clock then the probe, closed afterwards; the probe got the operator's parameters.
    assert vm.connects == 1 and vm.commands == ["date +%s.%N", "bash -s"] and vm.open_sessions == 0
    assert vm.probe_params["P_IMAGE"] == BASE_IMAGE
    assert (vm.probe_params["P_BLOB_HOST"], vm.probe_params["P_BLOB_PORT"]) == (BLOB_HOST, "443")
    assert (vm.probe_params["P_GPU"], vm.probe_params["P_PULL"]) == ("0", "0")


def test_disk_under_threshold_fails_naming_check_threshold_and_value(vm):
    vm.disk_free_gib = 12.5
    ctx = make_context(params={"min_disk_gib": 20})
    with pytest.raises(EdgeVMNotReadyError) as err:
        run(readiness_op(min_disk_gib="{{ params.min_disk_gib }}"), ctx)
    message = str(err.value)
    assert message.startswith("edge VM 10.20.0.5:22 is not ready: 1 check(s) failed: ")
    assert "disk_free_gib (threshold 20.0, found 12.5): 12.5 GiB free at /home/edgeops, need >= 20 GiB" in message
    # The report is in XCom even though the task failed.
    report = ctx["ti"].xcom["readiness_report"]
    assert report["status"] == "fail" and failed(report) == ["disk_free_gib"]


def test_warn_only_check_does_not_fail_unless_the_policy_says_so(vm):
    vm.password_authentication = "yes"
    report = run(readiness_op(), make_context())
    assert report["status"] == "warn"
    assert by_name(report)["sshd_password_auth"]["status"] == "warn"
    assert failed(report) == []

    # The same VM under sshd_policy=fail (templated, any case) fails naming the check.
    ctx = make_context(params={"sshd_policy": "FAIL"})
    with pytest.raises(EdgeVMNotReadyError, match=re.escape("sshd_password_auth (threshold no, found yes)")):
        run(readiness_op(sshd_policy="{{ params.sshd_policy }}"), ctx)
    assert failed(ctx["ti"].xcom["readiness_report"]) == ["sshd_password_auth"]


def test_every_failed_check_is_named_at_once(vm):
    vm.docker_up = False
    vm.listening = set()
    vm.mem_free_gib = 1.0
    ctx = make_context()
    with pytest.raises(EdgeVMNotReadyError) as err:
        run(readiness_op(require_gpu=True), ctx)
    message = str(err.value)
    assert "5 check(s) failed" in message
    assert failed(ctx["ti"].xcom["readiness_report"]) == [
        "docker_daemon", "docker_image", "memory_free_gib", "blob_endpoint_tcp", "gpu",
    ]
    assert "Cannot connect to the Docker daemon" in message
    assert f"the VM cannot open TCP to {BLOB_ENDPOINT}: bash: line 1: connect: Connection refused" in message
    assert "memory_free_gib (threshold 2.0, found 1.0)" in message
    assert "a GPU was required but none was found: nvidia-smi not found on PATH" in message


def test_vm_clock_far_off_fails_the_clock_check(vm):
    vm.clock_offset_s = -120.0
    skew = r"clock_skew_s \(threshold 30\.0, found -1(19|20)\.\d+\): VM clock is 1(19|20)\.\d+s behind"
    with pytest.raises(EdgeVMNotReadyError, match=skew):
        run(readiness_op(), make_context())


def test_missing_image_is_named_or_pulled_when_asked(vm):
    vm.images.clear()
    with pytest.raises(EdgeVMNotReadyError, match=re.escape(
        f"docker_image (threshold {BASE_IMAGE}, found None): image {BASE_IMAGE} is not present on the VM"
    )):
        run(readiness_op(), make_context())

    with pytest.raises(EdgeVMNotReadyError, match="pull failed: Error response from daemon: pull access denied"):
        run(readiness_op(pull_missing_image=True), make_context())

    vm.pullable = {BASE_IMAGE}
    report = run(readiness_op(pull_missing_image=True), make_context())
    assert report["status"] == "pass"
    assert "(pulled now)" in by_name(report)["docker_image"]["detail"]
    assert BASE_IMAGE in vm.images


def stackhub_conn(monkeypatch, conn_id: str = "fake_stackhub", *, suffix: str = STACKHUB_DOMAIN,
                  key: str | None = None) -> None:
    conn_str = (
        f"DefaultEndpointsProtocol=https;AccountName=edgedata;AccountKey={key or ACCOUNT_KEY};EndpointSuffix={suffix}"
    )
    set_conn(monkeypatch, conn_id, conn_type="wasb",
             extra={"connection_string": conn_str, "stack_hub_domain": STACKHUB_DOMAIN})


def test_blob_endpoint_comes_from_the_stack_hub_connection(vm, monkeypatch):
    stackhub_conn(monkeypatch)
    report = run(readiness_op(blob_endpoint=None, stackhub_conn_id="fake_stackhub"), make_context())
    assert (vm.probe_params["P_BLOB_HOST"], vm.probe_params["P_BLOB_PORT"]) == (BLOB_HOST, "443")
    assert by_name(report)["blob_endpoint_tcp"]["threshold"] == BLOB_ENDPOINT
    assert report["status"] == "pass"


def test_public_blob_endpoint_is_refused_before_the_vm_is_contacted(vm, monkeypatch):
    stackhub_conn(monkeypatch, "fake_public", suffix="core.windows.net")
    with pytest.raises(LocalityPolicyError, match=PUBLIC_REFUSED):
        run(readiness_op(blob_endpoint=None, stackhub_conn_id="fake_public"), make_context())
    assert vm.connects == 0 and vm.commands == []


def test_unreachable_vm_is_retried_then_reported_as_the_ssh_check(vm, monkeypatch):
    from edge_training.hooks import edge_vm as edge_vm_hook

    vm.up = False
    sleeps: list[float] = []
    monkeypatch.setattr(edge_vm_hook.time, "sleep", sleeps.append)
    ctx = make_context()
    with pytest.raises(EdgeVMNotReadyError, match=re.escape(
        "ssh (threshold connect within 10s, key auth, pinned host key, found unreachable): cannot connect to "
        "edgeops@10.20.0.5:22: 3 attempt(s)"
    )) as err:
        run(readiness_op(connect_attempts=3), ctx)
    assert "No route to host" in str(err.value)
    assert vm.connects == 3 and sleeps == [2.0, 4.0]
    assert [c["name"] for c in ctx["ti"].xcom["readiness_report"]["checks"]] == ["ssh"]


def test_a_vm_refusing_the_key_fails_at_once_naming_the_connection(vm):
    """Not retried, here or by Airflow: the same key would be refused again (an AirflowFailException)."""
    from airflow.sdk.exceptions import AirflowFailException

    vm.accepts_key = False
    with pytest.raises(EdgeVMAuthError, match=re.escape(
        "edge VM edgeops@10.20.0.5:22 refused authentication (Authentication failed.): expected the key in "
        "connection 'fake_edge_vm' to be authorised for edgeops"
    )) as err:
        run(readiness_op(connect_attempts=3), make_context())
    assert isinstance(err.value, AirflowFailException)
    assert vm.connects == 1


def test_a_vm_presenting_another_host_key_is_refused_before_any_command(vm):
    from airflow.sdk.exceptions import AirflowFailException

    vm.host_key_seed = 2  # rebuilt VM, or someone in the middle
    ctx = make_context()
    mismatch = r"presented host key ssh-ed25519 SHA256:\S+, expected the pinned ssh-ed25519 SHA256:"
    with pytest.raises(HostKeyMismatchError, match=mismatch) as err:
        run(readiness_op(), ctx)
    assert isinstance(err.value, AirflowFailException)  # no retries for a trust failure
    assert vm.commands == [] and vm.open_sessions == 0
    assert "readiness_report" not in ctx["ti"].xcom


# =================================================================================================
# Stack Hub: an in-memory account behind the SDK's real BlobServiceClient
# =================================================================================================
ACCOUNT_KEY = base64.b64encode(b"fake-stack-hub-account-key-0123456789").decode()
CONTAINER = "training"
PREFIX = "telemetry/date=2026-11-10/"
HEADER = "ts,device_id,temp_c,vibration_mm_s"
_etags = itertools.count(0x8DD0000000000)


@dataclass
class FakeBlob:
    data: bytes
    content_md5: bytes | None
    etag: str
    content_type: str = "application/octet-stream"


class FakeBlobStorage:
    """Stack Hub storage accounts: (account host, container) -> blobs; every request is logged."""

    def __init__(self) -> None:
        self.containers: dict[tuple[str, str], dict[str, FakeBlob]] = {}
        self.account_keys: dict[str, str] = {BLOB_HOST: ACCOUNT_KEY}
        self.requests: list[tuple[Any, ...]] = []
        self.clients: list[str] = []  # account URLs a container client was made for
        self.on_request: list[Any] = []  # callbacks(op, name): e.g. a writer finishing a late partition
        self.staged: dict[tuple[str, str], dict[str, dict[str, bytes]]] = {}  # uncommitted blocks

    def blobs(self, container: str = CONTAINER, host: str = BLOB_HOST) -> dict[str, FakeBlob]:
        return self.containers.setdefault((host, container), {})

    def put(self, name: str, data: bytes, *, container: str = CONTAINER, md5: bool = True) -> FakeBlob:
        """A single-shot upload: the service stores the Content-MD5 of the bytes."""
        blob = FakeBlob(data, hashlib.md5(data).digest() if md5 else None, f'"0x{next(_etags):X}"')
        self.blobs(container)[name] = blob
        return blob

    def manifest(self, prefix: str = PREFIX) -> dict[str, Any] | None:
        blob = self.blobs().get(prefix + "_manifest.json")
        return json.loads(blob.data) if blob else None


class FakeBlobClient:
    def __init__(self, cc: FakeContainerClient, name: str) -> None:
        self.cc, self.blob_name = cc, name

    def get_blob_properties(self, **_: Any):
        self.cc.request("get_blob_properties", self.blob_name)
        return self.cc.properties(self.blob_name)

    def stage_block(self, block_id: str, data: bytes, **_: Any) -> None:
        self.cc.request("stage_block", self.blob_name)
        self.cc.staged().setdefault(self.blob_name, {})[block_id] = bytes(data)

    def commit_block_list(self, block_list: list[Any], content_settings: Any = None, **_: Any) -> None:
        from azure.core.exceptions import HttpResponseError

        self.cc.request("commit_block_list", self.blob_name)
        # As the service does: a commit discards every uncommitted block of the blob, any writer's.
        staged = self.cc.staged().pop(self.blob_name, {})
        if any(block.id not in staged for block in block_list):
            err = HttpResponseError(message="The specified block list is invalid.\nErrorCode:InvalidBlockList")
            err.error_code = "InvalidBlockList"  # as azure-storage-blob sets it from the response
            raise err
        data = b"".join(staged[block.id] for block in block_list)
        # A block-list commit carries no Content-MD5 of the whole blob.
        content_type = getattr(content_settings, "content_type", None) or "application/octet-stream"
        self.cc.blobs[self.blob_name] = FakeBlob(data, None, f'"0x{next(_etags):X}"', content_type)


class FakeContainerClient:
    """azure.storage.blob.ContainerClient, the calls the hook makes, over the in-memory account."""

    def __init__(self, storage: FakeBlobStorage, service) -> None:
        self.storage = storage
        self.service_url = service.url.rstrip("/")
        self.host = urlsplit(service.url).hostname
        self.key = service.credential.account_key
        self.api_version = service.api_version
        self.container_name = ""
        # The generated client, whose _send_request the hook's listing (stackhub_listing) sends List Blobs to.
        self._client = SimpleNamespace(_send_request=self.send_list_blobs)

    @property
    def url(self) -> str:
        return f"{self.service_url}/{self.container_name}"

    def send_list_blobs(self, request):
        """One List Blobs page as the service answers it: XML, ``maxresults`` entries after ``marker``."""
        import xml.etree.ElementTree as ET
        from urllib.parse import parse_qs

        query = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query, keep_blank_values=True).items()}
        assert (query["restype"], query["comp"]) == ("container", "list"), request.url
        assert request.headers["x-ms-version"] == self.api_version
        prefix = query.get("prefix", "")
        self.request("list_blobs", prefix)
        names = sorted(n for n in self.blobs if n.startswith(prefix) and n > query.get("marker", ""))
        page, rest = names[: int(query["maxresults"])], names[int(query["maxresults"]):]
        root = ET.Element("EnumerationResults", ContainerName=self.container_name)
        ET.SubElement(root, "Prefix").text = prefix
        listed = ET.SubElement(root, "Blobs")
        for name in page:
            blob = self.blobs[name]
            entry = ET.SubElement(listed, "Blob")
            ET.SubElement(entry, "Name").text = name
            props = ET.SubElement(entry, "Properties")
            ET.SubElement(props, "Etag").text = blob.etag.strip('"')
            ET.SubElement(props, "Content-Length").text = str(len(blob.data))
            if blob.content_md5:
                ET.SubElement(props, "Content-MD5").text = base64.b64encode(blob.content_md5).decode()
        ET.SubElement(root, "NextMarker").text = page[-1] if rest else None
        return SimpleNamespace(status_code=200, reason="OK", headers={}, content=ET.tostring(root, xml_declaration=True))

    def staged(self) -> dict[str, dict[str, bytes]]:
        """Uncommitted blocks per blob: the account's, shared by every client of the container."""
        return self.storage.staged.setdefault((self.host, self.container_name), {})

    @property
    def blobs(self) -> dict[str, FakeBlob]:
        return self.storage.blobs(self.container_name, self.host)

    def request(self, op: str, name: str | None = None) -> None:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

        self.storage.requests.append((op, self.container_name, name))
        for callback in self.storage.on_request:
            callback(op, name)
        if self.api_version > "2019-07-07":
            raise HttpResponseError(message=f"The value for one of the HTTP headers is not in the correct format "
                                            f"(x-ms-version {self.api_version}).\nErrorCode:InvalidHeaderValue")
        if self.key != self.storage.account_keys.get(self.host):
            raise ClientAuthenticationError(
                "Server failed to authenticate the request. Make sure the value of Authorization header is "
                "formed correctly including the signature.\nErrorCode:AuthenticationFailed"
            )

    def properties(self, name: str):
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import BlobProperties, ContentSettings

        blob = self.blobs.get(name)
        if blob is None:
            raise ResourceNotFoundError("The specified blob does not exist.\nErrorCode:BlobNotFound")
        props = BlobProperties()
        props.name, props.size, props.etag = name, len(blob.data), blob.etag
        props.content_settings = ContentSettings(
            content_type=blob.content_type, content_md5=bytearray(blob.content_md5) if blob.content_md5 else None
        )
        return props

    def list_blobs(self, name_starts_with: str | None = None, include: Any = None,
                   results_per_page: int | None = None, **_: Any):
        self.request("list_blobs", name_starts_with)
        for name in sorted(n for n in self.blobs if n.startswith(name_starts_with or "")):
            yield self.properties(name)

    def download_blob(self, blob: str, offset: int | None = None, length: int | None = None, **_: Any):
        self.request("download_blob", blob)
        self.storage.requests[-1] += (offset, length)
        self.properties(blob)  # a missing blob raises ResourceNotFoundError, as the service answers 404
        data = self.blobs[blob].data
        start = offset or 0
        end = len(data) if length is None else start + length
        return SimpleNamespace(readall=lambda: data[start:end])

    def get_blob_client(self, blob: str) -> FakeBlobClient:
        return FakeBlobClient(self, blob)


@pytest.fixture
def storage(monkeypatch) -> FakeBlobStorage:
    from azure.storage.blob import BlobServiceClient

    account = FakeBlobStorage()

    def get_container_client(service, container: str) -> FakeContainerClient:
        account.clients.append(service.url)
        cc = FakeContainerClient(account, service)
        cc.container_name = container
        return cc

    monkeypatch.setattr(BlobServiceClient, "get_container_client", get_container_client)
    stackhub_conn(monkeypatch)
    return account


def csv_part(index: int, rows: int, header: str = HEADER) -> bytes:
    lines = [header] + [f"2026-11-10T{h % 24:02d}:{h % 60:02d}:00Z,dev-{index},{20 + h * 0.1:.1f},{0.5 + h / 100:.2f}"
                        for h in range(rows)]
    return ("\n".join(lines) + "\n").encode()


PARTS = [f"part-{i:05d}.csv" for i in range(3)]


def write_partition(storage: FakeBlobStorage, *, prefix: str = PREFIX, marker: bool = True) -> None:
    for i, part in enumerate(PARTS):
        storage.put(prefix + part, csv_part(i, rows=60 * (i + 1)))  # 2.5 KiB and up: bigger than a header read
    storage.put(prefix + "_logs/writer.log", b"wrote 3 parts\n")  # neither data nor marker
    if marker:
        storage.put(prefix + "_SUCCESS", b"")


def partition_op(**kwargs: Any):
    from edge_training.operators.stackhub_blob import StackHubPartitionOperator

    kwargs.setdefault("prefix", "telemetry/date={partition_date}/")
    kwargs.setdefault("partition_key", "{{ dag_run.partition_key }}")
    kwargs.setdefault("stackhub_conn_id", "fake_stackhub")
    kwargs.setdefault("deferrable", False)
    return StackHubPartitionOperator(task_id="validate_partition", **kwargs)


def partition_context(key: str = "2026-11-10T02:00:00") -> dict[str, Any]:
    return make_context(dag_run=SimpleNamespace(partition_key=key))


def test_complete_partition_is_summarised_fingerprinted_and_manifested(storage):
    from edge_training.hooks.stackhub_fingerprint import FINGERPRINT_VERSION, fingerprint_entries

    write_partition(storage)
    summary = run(partition_op(), partition_context())

    blobs = storage.blobs()
    parts = [(p, blobs[PREFIX + p]) for p in PARTS]
    fingerprint, count, size = fingerprint_entries((p, len(b.data), b.content_md5, b.etag) for p, b in parts)
    day = {
        "account_host": BLOB_HOST,
        "container": CONTAINER,
        "prefix": PREFIX,
        "file_count": 3,
        "bytes": size,
        "fingerprint": fingerprint,
        "data_uri": f"azureml://datastores/stackhub_data/paths/{PREFIX}",
        "partition_date": "2026-11-10",
        "manifest": PREFIX + "_manifest.json",
    }
    # A one-day window (the default): the day's own fingerprint, read by the job as its `data` input.
    assert summary == {**day, "window_days": 1, "min_days": 1, "data_days": "2026-11-10", "missing_days": "",
                       "gaps": [], "partitions": [day],
                       "job_inputs": {"data": {"type": "uri_folder", "path": day["data_uri"]}}}
    assert count == 3 and size == sum(len(b.data) for _, b in parts)

    manifest = storage.manifest()
    assert blobs[PREFIX + "_manifest.json"].content_type == "application/json"
    assert manifest["files"] == [
        {"name": p, "size": len(b.data), "content_md5": base64.b64encode(b.content_md5).decode(),
         "etag": b.etag.strip('"')}
        for p, b in parts
    ]
    assert manifest["fingerprint"] == {"algorithm": "sha256", "format": FINGERPRINT_VERSION, "value": fingerprint}
    assert (manifest["file_count"], manifest["bytes"]) == (3, size)
    assert (manifest["account_host"], manifest["container"], manifest["prefix"]) == (BLOB_HOST, CONTAINER, PREFIX)
    assert (manifest["partition_date"], manifest["success_marker"], manifest["data_uri"]) == (
        "2026-11-10", "_SUCCESS", summary["data_uri"])
    assert manifest["schema"]["columns"] == HEADER.split(",")
    assert sorted(manifest["schema"]["checked_files"]) == [PREFIX + p for p in PARTS]

    # The header checks were ranged reads of the first KiB of each data file, never whole downloads.
    reads = [r for r in storage.requests if r[0] == "download_blob"]
    assert sorted(r[2] for r in reads) == [PREFIX + p for p in PARTS]
    assert all(r[3:] == (0, 1024) for r in reads)


def test_a_listing_over_many_pages_follows_the_markers_to_the_same_scan(storage):
    from edge_training.hooks.stackhub_blob import StackHubBlobHook

    write_partition(storage)

    def scan(per_page: int):
        storage.requests.clear()
        hook = StackHubBlobHook(stackhub_conn_id="fake_stackhub", results_per_page=per_page)
        result = hook.scan_partition(container=CONTAINER, prefix=PREFIX)
        result.spool.seek(0)
        listed = [r for r in storage.requests if r[0] == "list_blobs"]
        return (result.fingerprint, result.file_count, result.marker_present, result.ignored_count,
                result.spool.read()), len(listed)

    one_page, pages_of_one = scan(5000), scan(2)
    # 5 blobs (3 parts, a log, the marker): three pages of 2, each asked with the marker of the last.
    assert pages_of_one == (one_page[0], 3) and one_page[1] == 1
    assert one_page[0][1:4] == (3, True, 1)


def window_prefix(day: str) -> str:
    return f"telemetry/date={day}/"


def test_a_window_validates_each_day_and_its_fingerprint_covers_exactly_the_days_used(storage):
    """window_days 3: three days validated (a manifest each), one job input per day (oldest first, the run's
    own day `data`), counts summed; the fingerprint changes with any day's data and with the days used."""
    from edge_training.windows import window_fingerprint

    days = ["2026-11-08", "2026-11-09", "2026-11-10"]
    for day in days:
        write_partition(storage, prefix=window_prefix(day))
    summary = run(partition_op(window_days=3), partition_context())

    singles = [run(partition_op(), partition_context(day)) for day in days]
    assert [p["fingerprint"] for p in summary["partitions"]] == [s["fingerprint"] for s in singles]
    assert summary["fingerprint"] == window_fingerprint(summary["partitions"])
    assert summary["fingerprint"] not in {s["fingerprint"] for s in singles}
    assert (summary["data_days"], summary["missing_days"], summary["partition_date"]) == (",".join(days), "",
                                                                                          "2026-11-10")
    assert summary["file_count"] == 9 and summary["bytes"] == sum(s["bytes"] for s in singles)
    assert summary["job_inputs"] == {
        "data_2026_11_08": {"type": "uri_folder", "path": singles[0]["data_uri"]},
        "data_2026_11_09": {"type": "uri_folder", "path": singles[1]["data_uri"]},
        "data": {"type": "uri_folder", "path": singles[2]["data_uri"]},
    }
    assert all(window_prefix(day) + "_manifest.json" in storage.blobs() for day in days)

    # Another day's data changed: another fingerprint, so another job, model and image.
    storage.put(window_prefix(days[0]) + PARTS[0], csv_part(7, rows=61))
    assert run(partition_op(window_days=3), partition_context())["fingerprint"] != summary["fingerprint"]


def test_a_missing_day_fails_the_window_naming_it_unless_min_days_allows_the_gap(storage, capsys):
    from edge_training.exceptions import WindowIncompleteError

    for day in ("2026-11-08", "2026-11-10"):
        write_partition(storage, prefix=window_prefix(day))
    write_partition(storage, prefix=window_prefix("2026-11-07"), marker=False)  # written, not complete

    with pytest.raises(WindowIncompleteError) as refused:
        run(partition_op(window_days=3), partition_context())
    message = str(refused.value)
    assert "training window of 3 days ending 2026-11-10" in message and "at least 3 usable days" in message
    assert "2026-11-09: " in message and "found 2" in message, message

    capsys.readouterr()
    allowed = run(partition_op(window_days=4, min_days=2), partition_context())
    logged = "".join(capsys.readouterr())  # Airflow's task loggers (structlog) write to the console
    assert (allowed["data_days"], allowed["missing_days"]) == ("2026-11-08,2026-11-10", "2026-11-07,2026-11-09")
    assert [(g["date"], g["finding"]) for g in allowed["gaps"]] == [("2026-11-07", "incomplete"),
                                                                     ("2026-11-09", "no data")]
    assert "day 2026-11-09 is a gap" in logged and "day 2026-11-07 is a gap" in logged, logged
    assert list(allowed["job_inputs"]) == ["data_2026_11_08", "data"]
    # The same two days through a window that needs no gap: the same data, so the same fingerprint (job).
    two_days = run(partition_op(window_days=3, min_days=2), partition_context())
    assert two_days["fingerprint"] == allowed["fingerprint"]


def test_a_day_with_schema_drift_fails_the_window_even_when_min_days_allows_gaps(storage):
    """Only a day with no data or an incomplete one is a gap: drifted columns are bad data, never skipped."""
    for day in ("2026-11-08", "2026-11-09", "2026-11-10"):
        write_partition(storage, prefix=window_prefix(day))
    storage.put(window_prefix("2026-11-09") + PARTS[2], csv_part(2, rows=50, header="ts,device_id,temp_c,humidity"))
    with pytest.raises(SchemaDriftError, match="telemetry/date=2026-11-09/part-00002.csv"):
        run(partition_op(window_days=3, min_days=1), partition_context())


@pytest.mark.parametrize("window_days, min_days, found", [
    (0, None, "window_days 0: expected 1 to 31 days"),
    (32, None, "window_days 32: expected 1 to 31 days"),
    (3, 4, "min_days 4: expected 1 to window_days (3)"),
    ("3 days", None, "window_days '3 days': expected a whole number of days, found str"),
    (True, None, "window_days True: expected a whole number of days, found bool"),
])
def test_bad_window_arguments_are_refused_before_any_request(storage, window_days, min_days, found):
    from edge_training.exceptions import InvalidInputError

    with pytest.raises(InvalidInputError, match=re.escape(found)):
        run(partition_op(window_days=window_days, min_days=min_days), partition_context())
    assert not [r for r in storage.requests if r[0] in ("list_blobs", "download_blob")]


def test_a_one_day_window_fails_as_the_day_does(storage):
    """No gap to train around: a missing day is PartitionMissingError, as before windows existed."""
    from edge_training.exceptions import PartitionMissingError, WindowIncompleteError

    with pytest.raises(PartitionMissingError) as refused:
        run(partition_op(), partition_context())
    assert not isinstance(refused.value, WindowIncompleteError)


def test_a_manifest_committed_by_another_run_meanwhile_is_written_again_not_failed(storage):
    """A manual run beside a backfill of the same day: the other run commits the manifest between this one's
    staging and commit (the service then discards this one's blocks). This run writes it again and succeeds."""
    write_partition(storage)
    other_run = run(partition_op(), partition_context())  # the manifest the other run writes
    manifest_name = PREFIX + "_manifest.json"
    commits = []

    def other_writer_commits_first(op, name):
        if op == "commit_block_list" and name == manifest_name:
            commits.append(name)
            if len(commits) == 1:  # the other run's commit lands just before this run's first one
                storage.staged[(BLOB_HOST, CONTAINER)].pop(manifest_name, None)
                storage.put(manifest_name, json.dumps({"written_by": "the other run"}).encode())

    storage.on_request.append(other_writer_commits_first)
    summary = run(partition_op(), partition_context())
    assert summary == other_run
    assert len(commits) == 2  # refused once (InvalidBlockList), written again
    assert storage.manifest()["fingerprint"]["value"] == summary["fingerprint"]


def test_rerun_gives_the_same_summary_and_new_data_a_new_fingerprint(storage):
    write_partition(storage)
    first = run(partition_op(), partition_context())
    again = run(partition_op(), partition_context())
    assert again == first  # the manifest of the first run is not counted as data
    assert storage.manifest()["file_count"] == 3

    storage.put(PREFIX + "part-00001.csv", csv_part(1, rows=121))  # re-written by the producer
    changed = run(partition_op(), partition_context())
    assert changed["fingerprint"] != first["fingerprint"]
    assert changed["bytes"] > first["bytes"] and changed["file_count"] == 3
    assert storage.manifest()["fingerprint"]["value"] == changed["fingerprint"]


def test_missing_partition_is_named(storage):
    from edge_training.exceptions import PartitionMissingError

    write_partition(storage)  # 2026-11-10 only
    context = partition_context("2026-11-11T02:00:00")
    message = "partition training/telemetry/date=2026-11-11/ does not exist: no blobs under the prefix"
    with pytest.raises(PartitionMissingError, match=re.escape(message)):
        run(partition_op(), context)
    assert storage.manifest("telemetry/date=2026-11-11/") is None
    # The day's finding stays in XCom for the Edge training page, beside the task's failure.
    assert context["ti"].xcom["validation_finding"] == {"finding": "no data", "message": message}


@pytest.mark.parametrize(("change", "finding"), [
    (lambda storage: storage.put(PREFIX + "part-00001.csv", b""), "incomplete"),
    (lambda storage: storage.put(PREFIX + "part-00002.csv", csv_part(2, rows=5, header="ts,other")), "schema drift"),
])
def test_a_refused_partition_leaves_its_finding_for_the_page(storage, change, finding):
    write_partition(storage)
    change(storage)
    context = partition_context()
    with pytest.raises(StackHubError) as err:
        run(partition_op(), context)
    assert context["ti"].xcom["validation_finding"] == {"finding": finding, "message": str(err.value).splitlines()[0]}
    assert "return_value" not in context["ti"].xcom


def test_a_valid_partition_records_no_finding(storage):
    write_partition(storage)
    context = partition_context()
    run(partition_op(), context)
    assert "validation_finding" not in context["ti"].xcom


def test_partition_without_its_success_marker_is_incomplete(storage):
    write_partition(storage, marker=False)
    with pytest.raises(PartitionIncompleteError, match=re.escape(
        f"partition training/{PREFIX} has no _SUCCESS marker: expected {PREFIX}_SUCCESS"
    )):
        run(partition_op(), partition_context())
    assert storage.manifest() is None
    assert not [r for r in storage.requests if r[0] in ("download_blob", "stage_block", "commit_block_list")]


def test_zero_byte_data_file_is_named(storage):
    write_partition(storage)
    storage.put(PREFIX + "part-00001.csv", b"")
    with pytest.raises(PartitionIncompleteError, match=re.escape(
        f"partition training/{PREFIX} has 1 zero-byte data file(s): {PREFIX}part-00001.csv"
    )):
        run(partition_op(), partition_context())
    assert storage.manifest() is None


def test_schema_drift_names_the_file_and_the_columns(storage):
    write_partition(storage)
    storage.put(PREFIX + "part-00002.csv", csv_part(2, rows=50, header="ts,device_id,temp_c,humidity"))
    with pytest.raises(SchemaDriftError) as err:
        run(partition_op(), partition_context())
    message = str(err.value)
    assert f"against the header of {PREFIX}part-00000.csv" in message
    assert f"{PREFIX}part-00002.csv: missing ['vibration_mm_s'], extra ['humidity']" in message
    assert storage.manifest() is None

    # Against expected columns, every file that lacks one is named.
    write_partition(storage)
    drift = r"schema drift in 3 of 3 checked data file\(s\) against the expected columns .*: .*missing \['site'\]"
    with pytest.raises(SchemaDriftError, match=drift):
        run(partition_op(expected_columns=[*HEADER.split(","), "site"]), partition_context())


def test_public_endpoint_is_refused_before_any_request(storage, monkeypatch):
    stackhub_conn(monkeypatch, "fake_public", suffix="core.windows.net")
    storage.account_keys["edgedata.blob.core.windows.net"] = ACCOUNT_KEY
    with pytest.raises(LocalityPolicyError, match=PUBLIC_REFUSED):
        run(partition_op(stackhub_conn_id="fake_public"), partition_context())
    assert storage.clients == [] and storage.requests == []


def test_a_refused_account_key_is_named(storage, monkeypatch):
    stackhub_conn(monkeypatch, "fake_stale_key", key=base64.b64encode(b"rotated-away-key-0123456789").decode())
    write_partition(storage)
    with pytest.raises(StackHubAuthError, match=re.escape(
        f"Stack Hub account https://{BLOB_HOST}/ (connection 'fake_stale_key') refused the credentials"
    )):
        run(partition_op(stackhub_conn_id="fake_stale_key"), partition_context())


def test_late_partition_defers_with_the_trigger_then_validates_when_ready(storage):
    from airflow.sdk.exceptions import TaskDeferred

    from edge_training.triggers.stackhub_blob import StackHubPartitionTrigger

    write_partition(storage, marker=False)

    def no_polling_in_the_worker(op: str, name: str | None) -> None:
        if sum(r[0] == "get_blob_properties" for r in storage.requests) > 1:
            raise AssertionError("the operator polled for the marker in the worker instead of deferring")

    storage.on_request.append(no_polling_in_the_worker)
    op = partition_op(wait_for_partition=True, deferrable=True, wait_timeout=1800, poll_interval=45,
                      max_poll_interval=300)
    ctx = partition_context()
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        run(op, ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, StackHubPartitionTrigger)
    path, kwargs = trigger.serialize()
    assert kwargs == {
        "stackhub_conn_id": "fake_stackhub",
        "partition": {
            "container": CONTAINER,
            "prefix": PREFIX,
            "partition_key": "2026-11-10T02:00:00",
            "data_pattern": "part-*.csv",
            "success_marker": "_SUCCESS",
            "expected_columns": None,
            "header_sample_size": 20,
            "manifest_name": "_manifest.json",
            "datastore": "stackhub_data",
        },
        "deadline": pytest.approx(before + 1800, abs=5),
        "poll_interval": 45.0,
        "max_poll_interval": 300.0,
        "stack_hub_domain": None,
        "allow_public_endpoint": None,
    }
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == dt.timedelta(seconds=2100)
    # Only the marker was asked for; nothing was listed, read or written before deferring.
    assert [r[0] for r in storage.requests] == ["get_blob_properties"]
    assert storage.manifest() is None

    storage.put(PREFIX + "_SUCCESS", b"")  # the writer finishes; the trigger fires
    summary = op.execute_complete(ctx, {"status": EVENT_SUCCESS, "message": "written", "container": CONTAINER,
                                        "prefix": PREFIX})
    assert summary["file_count"] == 3 and summary["manifest"] == PREFIX + "_manifest.json"
    assert storage.manifest()["fingerprint"]["value"] == summary["fingerprint"]


def test_trigger_timeout_and_error_events_fail_the_task(storage):
    op = partition_op(wait_for_partition=True, deferrable=True)
    ctx = partition_context()
    op.render_template_fields(ctx)
    with pytest.raises(PartitionIncompleteError, match="was not ready after 3600s"):
        op.execute_complete(ctx, {"status": EVENT_TIMEOUT, "container": CONTAINER, "prefix": PREFIX,
                                  "message": f"partition training/{PREFIX} was not ready after 3600s"})
    with pytest.raises(StackHubError, match=re.escape(f"waiting for partition training/{PREFIX} failed: forbidden")):
        op.execute_complete(ctx, {"status": EVENT_ERROR, "container": CONTAINER, "prefix": PREFIX,
                                  "message": "forbidden"})
    assert storage.requests == []


def test_partition_already_there_is_not_waited_for(storage):
    write_partition(storage)
    summary = run(partition_op(wait_for_partition=True, deferrable=True), partition_context())  # no TaskDeferred
    assert summary["file_count"] == 3


def test_blocking_wait_polls_until_the_marker_lands(storage):
    write_partition(storage, marker=False)
    polls: list[str] = []

    def late_writer(op: str, name: str | None) -> None:
        if op == "get_blob_properties" and name == PREFIX + "_SUCCESS":
            polls.append(name)
            if len(polls) == 3:
                storage.put(PREFIX + "_SUCCESS", b"")

    storage.on_request.append(late_writer)
    op = partition_op(wait_for_partition=True, wait_timeout=30, poll_interval=0.01, max_poll_interval=0.02)
    summary = run(op, partition_context())
    assert len(polls) == 3 and summary["file_count"] == 3


def test_blocking_wait_gives_up_at_the_timeout(storage):
    write_partition(storage, marker=False)
    op = partition_op(wait_for_partition=True, wait_timeout=0.05, poll_interval=0.01, max_poll_interval=0.02)
    with pytest.raises(PartitionIncompleteError, match=re.escape(
        f"partition training/{PREFIX} was not ready after 0.05s: expected the _SUCCESS marker"
    )):
        run(op, partition_context())
    assert storage.manifest() is None


# =================================================================================================
# Model image: FakeDocker (docker.DockerClient) and FakeRegistry (RegistryClient)
# =================================================================================================
REGISTRY = "registry.local.azurestack.external:5000"
REG_USER, REG_PASSWORD = "edgepusher", "registry-password-0123"
MODEL = "edge-anomaly"
REPO_REF = f"{REGISTRY}/{MODEL}"
FINGERPRINT = hashlib.sha256(b"partition 2026-11-10").hexdigest()
TAGS = ["3", f"fp-{FINGERPRINT[:12]}"]
JOB = "edge_training-2026-11-10-abc"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
ExecResult = collections.namedtuple("ExecResult", "exit_code output")


def identity(version: str = "3", fingerprint: str = FINGERPRINT) -> dict[str, str]:
    return {
        "org.edge-training.model.name": MODEL,
        "org.edge-training.model.version": version,
        "org.edge-training.data.fingerprint": fingerprint,
        "org.edge-training.job.name": JOB,
    }


@dataclass
class FakeImageRecord:
    id: str
    labels: dict[str, str]
    model: bytes  # the model.joblib baked in: how the scoring app behaves depends on it


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    found, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command, _, rest = (pending + stripped).partition(" ")
        found.append((command.upper(), rest.strip()))
        pending = ""
    return found


class FakeContainer:
    def __init__(self, daemon: FakeDocker, image: FakeImageRecord, name: str, environment: dict[str, str]) -> None:
        self.daemon, self.image, self.name, self.environment = daemon, image, name, environment
        self.id = hashlib.sha256(name.encode()).hexdigest()
        self.status, self.exit_code, self.log = "created", None, b""

    def start(self) -> None:
        if self.image.model.startswith(b"crash"):
            self.status, self.exit_code = "exited", 1
            self.log = (b'Traceback (most recent call last):\n  File "/opt/serving/score.py", line 41, in <module>\n'
                        b"ValueError: /opt/model/model.joblib is not a joblib pickle\n")
        else:
            self.status = "running"
            self.log = f"scoring app listening on {self.environment['SCORING_PORT']}\n".encode()

    def exec_run(self, cmd: list[str], demux: bool = False, **_: Any) -> ExecResult:
        import docker

        from edge_training.hooks.smoke_test import smoke_probe_source

        if self.status != "running":
            raise docker.errors.APIError(f"409 Client Error: Conflict for containers/{self.id}/exec",
                                         explanation=f"container {self.id} is not running")
        assert cmd[:3] == ["python3", "-c", smoke_probe_source()], "the container was not given the smoke probe"
        config = json.loads(cmd[3])
        rows = config["rows"] or [{"temp_c": 20.0 + i, "vibration_mm_s": 0.5} for i in range(3)]
        if self.image.model.startswith(b"bad-output"):
            predictions: list[Any] = ["high", 0.2, None][: len(rows)]
        else:
            predictions = [round(0.1 * (i + 1), 3) for i in range(len(rows))]
        verdict = {"stage": "done", "health": {"status": "ok", "features": ["temp_c", "vibration_mm_s"]},
                   "status": 200, "body": {"predictions": predictions}, "rows": len(rows), "request": rows}
        return ExecResult(0, f"waiting for /health\n{json.dumps(verdict)}\n".encode())

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        if self.status == "running":
            raise TimeoutError("Read timed out")
        return {"StatusCode": self.exit_code, "Error": None}

    def reload(self) -> None:
        import docker

        if self.name not in self.daemon.containers:
            raise docker.errors.NotFound(f"No such container: {self.name}")

    def logs(self, tail: int | str = "all", **_: Any) -> bytes:
        return b"\n".join(self.log.splitlines()[-int(tail):]) if tail != "all" else self.log

    def remove(self, force: bool = False) -> None:
        import docker

        if self.name not in self.daemon.containers:
            raise docker.errors.NotFound(f"No such container: {self.name}")
        del self.daemon.containers[self.name]
        self.daemon.removed_containers.append(self.name)


class FakeDocker:
    """A Docker daemon as docker-py shows it: images with labels, tags, containers, build and push."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.up = True
        self.base_images = {BASE_IMAGE}
        self.images: dict[str, FakeImageRecord] = {}
        self.refs: dict[str, str] = {}  # "repository:tag" -> image id
        self.containers: dict[str, FakeContainer] = {}
        self.removed_containers: list[str] = []
        self.builds: list[dict[str, Any]] = []
        self.pushes: list[str] = []
        self.client_kwargs: list[dict[str, Any]] = []
        self.pings = 0

    # docker.DockerClient(**kwargs)
    def client(self, **kwargs: Any) -> SimpleNamespace:
        self.client_kwargs.append(kwargs)
        return SimpleNamespace(
            ping=self.ping, close=lambda: None, api=SimpleNamespace(build=self.build, tag=self.tag, push=self.push),
            images=SimpleNamespace(get=self.get_image, remove=self.remove_image),
            containers=SimpleNamespace(create=self.create_container),
        )

    def ping(self) -> bool:
        self.pings += 1
        if not self.up:
            raise ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")
        return True

    def resolve(self, name: str) -> FakeImageRecord:
        import docker

        if name in self.images:
            return self.images[name]
        ref = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        if ref in self.refs:
            return self.images[self.refs[ref]]
        raise docker.errors.ImageNotFound(f"No such image: {name}")

    def model_refs(self) -> list[str]:
        return sorted(ref for ref in self.refs if ref.startswith(REPO_REF))

    # -- low-level API ------------------------------------------------------------------------------
    def build(self, *, path: str, tag: str, buildargs: dict[str, str] | None = None, nocache: bool = False,
              decode: bool = False, **options: Any):
        assert decode, "the hook reads decoded build items"
        context = Path(path)
        files = {p.relative_to(context).as_posix(): p.read_bytes() for p in sorted(context.rglob("*")) if p.is_file()}
        self.builds.append({"tag": tag, "buildargs": dict(buildargs or {}), "files": sorted(files), "options": options})
        return self._build_stream(files, tag, dict(buildargs or {}), nocache)

    def _build_stream(self, files: dict[str, bytes], tag: str, buildargs: dict[str, str], nocache: bool):
        def error(message: str) -> dict[str, Any]:
            return {"errorDetail": {"message": message}, "error": message}

        if "Dockerfile" not in files:
            yield error("Cannot locate specified Dockerfile: Dockerfile")
            return
        instructions = dockerfile_instructions(files["Dockerfile"].decode())
        digest_input = json.dumps([sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()),
                                   sorted(buildargs.items())])
        image_id = "sha256:" + hashlib.sha256(digest_input.encode()).hexdigest()
        cached = image_id in self.images and not nocache
        args: dict[str, str] = {}
        labels: dict[str, str] = {}

        def expand(text: str) -> str:
            return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), text)

        for number, (command, rest) in enumerate(instructions, 1):
            yield {"stream": f"Step {number}/{len(instructions)} : {command} {rest}\n"}
            if command == "ARG":
                for token in shlex.split(rest):
                    name, has_default, default = token.partition("=")
                    args[name] = buildargs.get(name, default if has_default else "")
            elif command == "FROM" and expand(rest) not in self.base_images:
                yield error(f"pull access denied for {expand(rest)}, repository does not exist")
                return
            elif command == "COPY":
                for source in shlex.split(rest)[:-1]:
                    source = source.rstrip("/")
                    if not any(f == source or f.startswith(source + "/") for f in files):
                        yield error(f"COPY failed: file not found in build context: stat {source}: file does not exist")
                        return
            elif command == "LABEL":
                for token in shlex.split(rest):
                    key, _, value = token.partition("=")
                    labels[key] = expand(value)
            if cached:
                yield {"stream": " ---> Using cache\n"}
            yield {"stream": f" ---> {hashlib.sha256(f'{image_id}{number}'.encode()).hexdigest()[:12]}\n"}
        self.images[image_id] = FakeImageRecord(image_id, labels, files.get("model/model.joblib", b""))
        self.refs[tag] = image_id
        yield {"aux": {"ID": image_id}}
        yield {"stream": f"Successfully built {image_id[7:19]}\n"}
        yield {"stream": f"Successfully tagged {tag}\n"}

    def tag(self, image: str, repository: str, tag: str | None = None, force: bool = False) -> bool:
        self.refs[f"{repository}:{tag or 'latest'}"] = self.resolve(image).id
        return True

    def push(self, repository: str, tag: str | None = None, stream: bool = False, auth_config: dict | None = None,
             decode: bool = False):
        assert stream and decode, "the hook reads the push as a decoded stream"
        ref = f"{repository}:{tag}"
        self.pushes.append(ref)
        return self._push_stream(repository, tag, ref, auth_config or {})

    def _push_stream(self, repository: str, tag: str, ref: str, auth: dict[str, Any]):
        yield {"status": f"The push refers to repository [{repository}]"}
        host, _, path = repository.partition("/")
        if ref not in self.refs:
            message = f"tag does not exist: {ref}"
        elif host != self.registry.host:
            message = f'Get "https://{host}/v2/": dial tcp: lookup {host.split(":")[0]}: no such host'
        elif not self.registry.accepts(auth.get("username"), auth.get("password")):
            message = "unauthorized: authentication required"
        else:
            digest, size = self.registry.receive(path, tag, self.images[self.refs[ref]])
            yield {"status": f"{tag}: digest: {digest} size: {size}"}
            yield {"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}}
            return
        yield {"errorDetail": {"message": message}, "error": message}

    # -- images and containers ---------------------------------------------------------------------
    def get_image(self, name: str) -> SimpleNamespace:
        record = self.resolve(name)
        return SimpleNamespace(id=record.id, labels=dict(record.labels),
                               tags=sorted(r for r, i in self.refs.items() if i == record.id))

    def remove_image(self, image: str, force: bool = False, noprune: bool = False) -> None:
        record = self.resolve(image)
        if image in self.refs:
            del self.refs[image]
        else:
            for ref in [r for r, i in self.refs.items() if i == record.id]:
                del self.refs[ref]
        if record.id not in self.refs.values():
            del self.images[record.id]  # untagged: deleted

    def create_container(self, image: str, *, name: str, environment: dict[str, str] | None = None,
                         network_mode: str | None = None, labels: dict[str, str] | None = None, **_: Any):
        container = FakeContainer(self, self.resolve(image), name, dict(environment or {}))
        self.containers[name] = container
        return container


class FakeRegistry:
    """A distribution v2 registry: repositories of tags -> manifests -> image configs (with labels)."""

    def __init__(self, host: str, users: dict[str, str]) -> None:
        self.host, self.users = host, users
        self.repos: dict[str, dict[str, dict[str, Any]]] = {}
        self.received: list[tuple[str, str]] = []  # accepted pushes
        self.retags: list[tuple[str, str]] = []  # manifests put under a tag without Docker
        self.auth_checks = 0
        self.after_push: Any = None  # callback(repository, tag): e.g. a concurrent writer

    def accepts(self, username: str | None, password: str | None) -> bool:
        return username in self.users and self.users[username] == password

    def repo(self, name: str) -> dict[str, dict[str, Any]]:
        return self.repos.setdefault(name, {"tags": {}, "manifests": {}, "configs": {}})

    def receive(self, repository: str, tag: str, image: FakeImageRecord) -> tuple[str, int]:
        layer = "sha256:" + hashlib.sha256(image.model).hexdigest()
        raw = json.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1470, "digest": image.id},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(image.model),
                        "digest": layer}],
        }, indent=3).encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        repo = self.repo(repository)
        repo["manifests"][digest] = raw
        repo["configs"][image.id] = {"architecture": "amd64", "os": "linux", "config": {"Labels": dict(image.labels)}}
        repo["tags"][tag] = digest
        self.received.append((repository, tag))
        if self.after_push is not None:
            self.after_push(repository, tag)
        return digest, len(raw)

    def tags(self, repository: str = MODEL) -> dict[str, str]:
        return dict(self.repos.get(repository, {}).get("tags", {}))

    # RegistryClient(server=..., username=..., password=..., verify=...)
    def client(self, *, server: str, username: str, password: str, verify: Any = True, **_: Any) -> FakeRegistryClient:
        return FakeRegistryClient(self, server, username, password)


class FakeRegistryClient:
    """RegistryClient's calls (check_auth, get_manifest, image_labels, put_manifest, close) on a FakeRegistry."""

    def __init__(self, registry: FakeRegistry, server: str, username: str, password: str) -> None:
        self.registry, self.server, self.username, self.password = registry, server, username, password

    def _call(self, method: str, path: str) -> None:
        if self.server != self.registry.host:
            raise ContainerImageError(f"registry {self.server} is not reachable at https://{self.server}{path}")
        if not self.registry.accepts(self.username, self.password):
            raise RegistryAuthError(
                f"registry {self.server} refused the credentials of user {self.username!r} "
                f"({method} {path}: HTTP 401). Check the registry connection's login and password."
            )

    def check_auth(self) -> None:
        self.registry.auth_checks += 1
        self._call("GET", "/v2/")

    def get_manifest(self, repository: str, reference: str):
        from edge_training.hooks.registry_client import Manifest

        self._call("GET", f"/v2/{repository}/manifests/{reference}")
        repo = self.registry.repos.get(repository)
        if repo is None:
            return None
        digest = reference if reference.startswith("sha256:") else repo["tags"].get(reference)
        raw = repo["manifests"].get(digest) if digest else None
        return Manifest(digest=digest, media_type=MANIFEST_TYPE, raw=raw) if raw else None

    def image_labels(self, repository: str, manifest) -> dict[str, str]:
        config = manifest.json["config"]["digest"]
        self._call("GET", f"/v2/{repository}/blobs/{config}")
        return self.registry.repos[repository]["configs"][config]["config"]["Labels"]

    def put_manifest(self, repository: str, tag: str, manifest) -> str:
        self._call("PUT", f"/v2/{repository}/manifests/{tag}")
        repo = self.registry.repo(repository)
        repo["manifests"][manifest.digest] = manifest.raw
        repo["tags"][tag] = manifest.digest
        self.registry.retags.append((repository, tag))
        return manifest.digest

    def close(self) -> None:
        pass


@pytest.fixture
def images(monkeypatch) -> SimpleNamespace:
    import docker

    from edge_training.hooks import container_image as hook_module

    registry = FakeRegistry(REGISTRY, {REG_USER: REG_PASSWORD})
    daemon = FakeDocker(registry)
    monkeypatch.setattr(docker, "DockerClient", daemon.client)
    monkeypatch.setattr(hook_module, "RegistryClient", registry.client)
    set_conn(monkeypatch, "fake_docker", conn_type="generic", host="unix:///var/run/docker.sock",
             extra={"timeout": 120})
    set_conn(monkeypatch, "fake_acr", conn_type="azure_container_registry", host=REGISTRY, login=REG_USER,
             password=REG_PASSWORD)
    return SimpleNamespace(docker=daemon, registry=registry)


def model_folder(root: Path, model: bytes = b"joblib model v3") -> Path:
    """An AML job output as downloaded: the model one folder down, beside files that must not ship."""
    folder = root / "aml-output" / MODEL
    folder.mkdir(parents=True)
    (folder / "model.joblib").write_bytes(model)
    (folder / "metrics.json").write_text('{"f1": 0.91}')
    (folder / "train.csv").write_text("ts,device_id\nprivate,data\n")
    return root / "aml-output"


def build_op(folder: Path, **kwargs: Any):
    from edge_training.operators.container_image import ModelImageBuildOperator

    args: dict[str, Any] = dict(
        task_id="build_image", model_name=MODEL, model_version="3", data_fingerprint=FINGERPRINT, job_name=JOB,
        partition="2026-11-10", model_dir=str(folder), git_commit="0123abcd", docker_conn_id="fake_docker",
        registry_conn_id="fake_acr",
    )
    args.update(kwargs)
    return ModelImageBuildOperator(**args)


def push_op(build_result: Any, **kwargs: Any):
    from edge_training.operators.container_image import ModelImagePushOperator

    return ModelImagePushOperator(task_id="push_image", build_result=build_result, docker_conn_id="fake_docker",
                                  registry_conn_id="fake_acr", **kwargs)


def test_new_model_is_built_once_with_identity_labels_and_both_tags(images, tmp_path):
    d, r = images.docker, images.registry
    result = run(build_op(model_folder(tmp_path)), make_context())

    assert len(d.builds) == 1 and len(d.images) == 1
    image_id = result["image_id"]
    assert d.refs == {f"{REPO_REF}:{TAGS[0]}": image_id, f"{REPO_REF}:{TAGS[1]}": image_id}
    labels = d.images[image_id].labels
    assert labels.items() >= identity().items()
    assert (labels["org.edge-training.partition"], labels["org.edge-training.git.commit"]) == ("2026-11-10", "0123abcd")
    assert labels["org.opencontainers.image.base.name"] == BASE_IMAGE
    assert {k: result[k] for k in ("registry", "repository", "repository_ref", "tags", "labels", "reused")} == {
        "registry": REGISTRY, "repository": MODEL, "repository_ref": REPO_REF, "tags": TAGS, "labels": identity(),
        "reused": False,
    }
    build = d.builds[0]
    assert build["tag"] == f"{REPO_REF}:{TAGS[0]}" and build["buildargs"]["BASE_IMAGE"] == BASE_IMAGE
    assert {"Dockerfile", "model/model.joblib", "model/metrics.json", "model/identity.json"} <= set(build["files"])
    assert not [f for f in build["files"] if f.endswith("train.csv")]  # only model files reach the image
    assert len(result["build"]["steps"]) >= 5 and result["build"]["cached_steps"] == []
    # Smoke-tested in a container that is gone afterwards; nothing pushed yet.
    assert result["smoke_test"]["rows"] == 3
    assert d.containers == {} and len(d.removed_containers) == 1
    assert r.received == [] and d.pushes == []
    # The connections were checked up front: Docker pinged, registry logged in to.
    assert d.pings == 1 and r.auth_checks == 1
    assert d.client_kwargs[0]["base_url"] == "unix:///var/run/docker.sock" and d.client_kwargs[0]["timeout"] == 120


def test_rerun_after_push_reuses_the_registry_image_and_builds_and_pushes_nothing(images, tmp_path):
    d, r = images.docker, images.registry
    folder = model_folder(tmp_path)
    built = run(build_op(folder), make_context())
    pushed = run(push_op(built), make_context())
    n_images, n_builds, n_received, n_pushes = len(d.images), len(d.builds), len(r.received), len(d.pushes)

    again = run(build_op(folder), make_context())
    assert (len(d.images), len(d.builds)) == (n_images, n_builds)
    assert again["reused"] is True and "image_id" not in again
    assert again["digest"] == pushed["digest"] and again["image"] == pushed["image"]

    again_pushed = run(push_op(again), make_context())
    assert again_pushed == {**pushed, "reused": True}
    assert (len(r.received), len(d.pushes)) == (n_received, n_pushes)


def test_version_tag_holding_another_model_is_refused_without_building(images, tmp_path):
    folder = model_folder(tmp_path)
    run(push_op(run(build_op(folder), make_context())), make_context())
    other = hashlib.sha256(b"partition 2026-11-11").hexdigest()
    with pytest.raises(ContainerImageError, match=re.escape(f"image {REPO_REF}:3 (sha256:")) as err:
        run(build_op(folder, data_fingerprint=other), make_context())
    assert (
        f"already holds another model (org.edge-training.data.fingerprint: expected '{other}', "
        f"found '{FINGERPRINT}'); refusing to overwrite the tag"
    ) in str(err.value)
    assert len(images.docker.builds) == 1


@pytest.mark.parametrize(
    ("model", "reasons"),
    [
        (b"crash: truncated pickle", ["is not running", "last log lines", "model.joblib is not a joblib pickle"]),
        (b"bad-output", ["expected predictions that are all numbers or all strings"]),
    ],
    ids=["app-crashes", "bad-predictions"],
)
def test_failed_smoke_test_fails_the_task_and_leaves_no_tag(images, tmp_path, model, reasons):
    d, r = images.docker, images.registry
    with pytest.raises(SmokeTestError) as err:
        run(build_op(model_folder(tmp_path, model)), make_context())
    message = str(err.value)
    assert message.startswith(f"smoke test of {REPO_REF}:{TAGS[0]}")
    for reason in reasons:
        assert reason in message
    assert len(d.builds) == 1
    assert d.model_refs() == [] and d.images == {}  # nothing a later push could pick up
    assert d.containers == {} and len(d.removed_containers) == 1
    assert r.received == []


def test_unreachable_docker_or_refused_registry_login_fail_before_any_build(images, tmp_path, monkeypatch):
    folder = model_folder(tmp_path)
    images.docker.up = False
    with pytest.raises(ContainerImageError, match=re.escape(
        "Docker host unix:///var/run/docker.sock (connection 'fake_docker') is not reachable: ConnectionError"
    )):
        run(build_op(folder), make_context())

    images.docker.up = True
    set_conn(monkeypatch, "fake_acr", conn_type="azure_container_registry", host=REGISTRY, login=REG_USER,
             password="an-old-password-42")
    with pytest.raises(RegistryAuthError, match=re.escape(
        f"registry connection 'fake_acr': registry {REGISTRY} refused the credentials of user 'edgepusher'"
    )):
        run(build_op(folder), make_context())
    assert images.docker.builds == []


def test_push_sends_both_tags_and_returns_the_registry_digest(images, tmp_path):
    r = images.registry
    built = run(build_op(model_folder(tmp_path)), make_context())
    ctx = make_context()
    out = run(push_op(built), ctx)

    digest = r.tags()[TAGS[0]]
    assert r.tags() == {TAGS[0]: digest, TAGS[1]: digest}
    assert r.received == [(MODEL, TAGS[0]), (MODEL, TAGS[1])]
    assert out == {"image": f"{REPO_REF}@{digest}", "tags": [f"{REPO_REF}:{t}" for t in TAGS], "digest": digest,
                   "reused": False}
    assert ctx["ti"].xcom["container_image_url"] == f"https://{REGISTRY}/v2/{MODEL}/manifests/{digest}"
    # The registry holds the smoke-tested image: its config is the build's, identity labels included.
    config = r.repos[MODEL]["configs"][built["image_id"]]
    assert config["config"]["Labels"].items() >= identity().items()


def test_push_emits_the_model_asset_event_with_the_partition_key_the_version_and_the_digest(images, tmp_path):
    """edge_deploy is scheduled on this event: one per shippable model, naming the image by digest."""
    from types import SimpleNamespace

    from airflow.sdk.execution_time.context import OutletEventAccessors

    from edge_training.assets import model_asset

    built = run(build_op(model_folder(tmp_path)), make_context())
    assert built["smoke_test"]["request"] and built["smoke_test"]["predictions"]
    ctx = make_context(outlet_events=OutletEventAccessors(),
                       dag_run=SimpleNamespace(partition_key="2026-11-10T00:00:00"))
    out = run(push_op(built, outlets=[model_asset(MODEL)]), ctx)

    event = ctx["outlet_events"][model_asset(MODEL)]
    assert event.partition_keys == {"2026-11-10T00:00:00"}
    assert event.extra["model_version"] == "3" and event.extra["model_name"] == MODEL
    assert event.extra["digest"] == out["digest"] and event.extra["image"] == out["image"]
    assert event.extra["image"].endswith("@" + images.registry.tags()[TAGS[0]])


def test_push_rerun_after_a_cut_short_push_adds_the_missing_tag_without_docker(images, tmp_path):
    d, r = images.docker, images.registry
    built = run(build_op(model_folder(tmp_path)), make_context())
    pushed = run(push_op(built), make_context())
    del r.repos[MODEL]["tags"][TAGS[1]]  # the first attempt died after the version tag
    n_pushes = len(d.pushes)

    again = run(push_op(built), make_context())
    assert again == {**pushed, "reused": True}
    assert r.tags()[TAGS[1]] == pushed["digest"]
    assert r.retags == [(MODEL, TAGS[1])] and len(d.pushes) == n_pushes


def test_registry_digest_differing_from_the_pushed_one_fails_the_push(images, tmp_path):
    d, r = images.docker, images.registry
    built = run(build_op(model_folder(tmp_path)), make_context())

    def concurrent_writer(repository: str, tag: str) -> None:
        if tag == TAGS[1]:  # between our push and our check, another build lands on the version tag
            r.after_push = None
            labels = dict(d.images[built["image_id"]].labels)
            r.receive(repository, TAGS[0], FakeImageRecord("sha256:" + "0" * 64, labels, b"another build"))

    r.after_push = concurrent_writer
    mismatch = (rf"registry {re.escape(REGISTRY)}: {MODEL}:3 has digest sha256:[0-9a-f]{{64}}, "
                rf"expected the pushed sha256:[0-9a-f]{{64}}")
    with pytest.raises(RegistryPushError, match=mismatch):
        run(push_op(built), make_context())


def test_local_image_replaced_since_the_build_is_not_pushed(images, tmp_path):
    d, r = images.docker, images.registry
    built = run(build_op(model_folder(tmp_path / "a")), make_context())
    rebuilt = run(build_op(model_folder(tmp_path / "b", b"joblib model v3, retrained")), make_context())
    assert rebuilt["image_id"] != built["image_id"]  # someone rebuilt the same tag locally since

    with pytest.raises(ContainerImageError, match=re.escape(
        f"local image {REPO_REF}:3 is {rebuilt['image_id']}, expected {built['image_id']} (the smoke-tested build)"
    )):
        run(push_op(built), make_context())
    assert r.received == []

    # Version tag back on the smoke-tested build but the fp- tag on the other one: the digests differ.
    d.refs[f"{REPO_REF}:{TAGS[0]}"] = built["image_id"]
    with pytest.raises(ContainerImageError, match=f"tags of {re.escape(REPO_REF)} were pushed with different digests"):
        run(push_op(built), make_context())


def test_image_found_at_build_but_gone_at_push_is_refused(images, tmp_path):
    folder = model_folder(tmp_path)
    run(push_op(run(build_op(folder), make_context())), make_context())
    reused = run(build_op(folder), make_context())
    images.registry.repos.clear()  # the repository was deleted in between
    with pytest.raises(ContainerImageError, match="held this model when the image was built but is gone now"):
        run(push_op(reused), make_context())
    assert images.docker.pushes[-1:] == [f"{REPO_REF}:{TAGS[1]}"]  # nothing pushed after the first push


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: {**b, "repository_ref": f"other.registry.example/{MODEL}"},
         "was built for another registry than connection 'fake_acr'"),
        (lambda b: {k: v for k, v in b.items() if k != "labels"},
         "argument 'build_result' expected a dict with keys ['repository', 'repository_ref', 'tags', 'labels', "
         "'reused'] (missing ['labels'])"),
    ],
    ids=["other-registry", "not-a-build-result"],
)
def test_push_refuses_a_build_result_it_cannot_trust(images, tmp_path, mutate, message):
    built = run(build_op(model_folder(tmp_path)), make_context())
    with pytest.raises((ContainerImageError, OperatorArgumentError), match=re.escape(message)):
        run(push_op(mutate(built)), make_context())
    assert images.registry.received == []
