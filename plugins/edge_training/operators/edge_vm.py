"""Check the edge VM is fit to train before any AML job exists (Docker, disk, memory, clock, network, sshd)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from edge_training.exceptions import EdgeVMNotReadyError
from edge_training.hooks.edge_vm import EdgeVMHook
from edge_training.hooks.edge_vm_checks import ReadinessParams, failure_summary
from edge_training.operators.arguments import flag, number

REPORT_XCOM_KEY = "readiness_report"


class EdgeVMReadinessOperator(BaseOperator):
    """Run the readiness checks on the edge VM in one SSH session and report all of them.

    The JSON report (``{host, user, checked_at, status, checks: [{name, threshold, value, status,
    detail}]}``) is returned (XCom ``return_value``) and also pushed as ``readiness_report``, so it is
    there when the task fails; the task fails, listing every failed check, when any check fails.
    Warnings (e.g. sshd posture under ``sshd_policy="warn"``) are logged and do not fail the task.

    ``blob_endpoint`` (``host:port``) is what the VM must reach; when not given it is read from
    ``stackhub_conn_id``'s connection string. Thresholds are templated (``{{ params.min_disk_gib }}``) and must
    render as numbers, flags as bools (``render_template_as_native_obj=True``).

    :param ssh_conn_id: SSH connection of the edge VM; it must pin the host key (templated).
    :param image: training image that must be on the VM; None skips the image check (templated).
    :param workdir: folder on the VM whose disk is measured (its nearest existing parent while it does
        not exist); empty: the login user's home (templated).
    :param min_disk_gib: free disk needed at ``workdir``, in GiB (templated, a number >= 0).
    :param min_memory_gib: available memory (``MemAvailable``) needed, in GiB (templated, a number >= 0).
    :param max_clock_skew_s: largest offset of the VM's clock from the Airflow host's, in seconds; a skew
        within the measurement's uncertainty of it only warns (templated, a number >= 0).
    :param blob_endpoint: ``host:port`` the VM must open TCP to; None: read from ``stackhub_conn_id``
        (templated).
    :param stackhub_conn_id: Stack Hub blob connection whose endpoint is checked when ``blob_endpoint``
        is not given; None as well: no network check (templated).
    :param require_gpu: fail unless ``nvidia-smi`` finds a GPU on the VM (templated, a bool).
    :param sshd_policy: ``warn`` or ``fail``: what an sshd that accepts passwords or root logins (or
        whose config cannot be read) does to the task (templated).
    :param docker_host: ``DOCKER_HOST`` on the VM; None keeps the VM's default (templated).
    :param sshd_config: sshd config file to evaluate; None: the one the serving daemon was started with,
        else ``/etc/ssh/sshd_config`` (templated).
    :param pull_missing_image: pull ``image`` when it is not on the VM instead of failing the check (a bool).
    :param connect_attempts: SSH connection tries, with backoff; only network errors are retried, never
        authentication or host key errors.
    :param command_timeout_s: seconds the probe may run on the VM before the task fails.
    """

    template_fields: Sequence[str] = (
        "ssh_conn_id",
        "image",
        "workdir",
        "min_disk_gib",
        "min_memory_gib",
        "max_clock_skew_s",
        "blob_endpoint",
        "stackhub_conn_id",
        "require_gpu",
        "sshd_policy",
        "docker_host",
        "sshd_config",
    )
    ui_color = "#cfe2f3"

    def __init__(
        self,
        *,
        ssh_conn_id: str = EdgeVMHook.default_conn_name,
        image: str | None = None,
        workdir: str = "",
        min_disk_gib: float = 20.0,
        min_memory_gib: float = 2.0,
        max_clock_skew_s: float = 30.0,
        blob_endpoint: str | None = None,
        stackhub_conn_id: str | None = "stackhub_blob",
        require_gpu: bool = False,
        sshd_policy: str = "warn",
        docker_host: str | None = None,
        sshd_config: str | None = None,
        pull_missing_image: bool = False,
        connect_attempts: int = 3,
        command_timeout_s: float = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ssh_conn_id = ssh_conn_id
        self.image = image
        self.workdir = workdir
        self.min_disk_gib = min_disk_gib
        self.min_memory_gib = min_memory_gib
        self.max_clock_skew_s = max_clock_skew_s
        self.blob_endpoint = blob_endpoint
        self.stackhub_conn_id = stackhub_conn_id
        self.require_gpu = require_gpu
        self.sshd_policy = sshd_policy
        self.docker_host = docker_host
        self.sshd_config = sshd_config
        self.pull_missing_image = pull_missing_image
        self.connect_attempts = connect_attempts
        self.command_timeout_s = command_timeout_s

    def _blob_endpoint(self) -> str | None:
        if self.blob_endpoint:
            return self.blob_endpoint
        if not self.stackhub_conn_id:
            return None
        from edge_training.hooks.stackhub_blob import StackHubBlobHook

        host, port = StackHubBlobHook(stackhub_conn_id=self.stackhub_conn_id).endpoint()
        return f"{host}:{port}"

    def params_for_run(self) -> ReadinessParams:
        return ReadinessParams(
            image=self.image or None,
            workdir=self.workdir or "",
            min_disk_gib=number(self, "min_disk_gib", self.min_disk_gib, minimum=0),
            min_memory_gib=number(self, "min_memory_gib", self.min_memory_gib, minimum=0),
            max_clock_skew_s=number(self, "max_clock_skew_s", self.max_clock_skew_s, minimum=0),
            blob_endpoint=self._blob_endpoint(),
            require_gpu=flag(self, "require_gpu", self.require_gpu),
            sshd_policy=str(self.sshd_policy).strip().lower(),
            docker_host=self.docker_host or None,
            sshd_config=self.sshd_config or None,
            pull_missing_image=flag(self, "pull_missing_image", self.pull_missing_image),
        )

    @cached_property
    def hook(self) -> EdgeVMHook:
        return EdgeVMHook(
            ssh_conn_id=self.ssh_conn_id,
            connect_attempts=self.connect_attempts,
            command_timeout_s=self.command_timeout_s,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        report = self.hook.readiness_report(self.params_for_run())
        for item in report["checks"]:
            log = self.log.warning if item["status"] != "pass" else self.log.info
            log("%-22s %-4s value=%s threshold=%s: %s", item["name"], item["status"], item["value"], item["threshold"], item["detail"])
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is not None:
            ti.xcom_push(key=REPORT_XCOM_KEY, value=report)
        if report["status"] == "fail":
            raise EdgeVMNotReadyError(failure_summary(report))
        return report
