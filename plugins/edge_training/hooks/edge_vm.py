"""Edge VM readiness over SSH: is the VM fit to run a training container right now?

One SSH connection (the SSH provider's SSHHook, host key pinned in the connection), two exec calls:
a ``date`` for the clock, then one bash probe script fed on stdin that gathers everything else.
Each check becomes ``{name, threshold, value, status: pass|warn|fail, detail}``; the report holds all
of them, so an operator sees every problem at once rather than the first.

The probe is ``edge_training/probes/edge_vm_readiness.sh`` (what it needs on the VM and how it reads
the sshd posture without root are in its header); turning its output into checks is the pure
``edge_vm_checks`` module.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseHook

from edge_training.exceptions import EdgeVMAuthError, EdgeVMError, HostKeyMismatchError
from edge_training.hooks.edge_vm_checks import (
    FAIL,
    PASS,
    ReadinessParams,
    build_checks,
    check,
    clock_check,
    overall_status,
    parse_probe,
    render_probe,
)


# ---------------------------------------------------------------------------------------------
# The hook
# ---------------------------------------------------------------------------------------------
class EdgeVMHook(BaseHook):
    """Readiness checks on the edge VM through ``airflow.providers.ssh`` SSHHook (connection ``edge_vm_ssh``).

    The connection must pin the host key (extra ``host_key``); ``no_host_key_check`` or
    ``allow_host_key_change`` are refused. Connection errors (refused, timeout, reset, banner)
    are retried ``connect_attempts`` times with backoff; authentication and host key errors never are.
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "edge_vm_ssh"
    conn_type = "ssh"
    hook_name = "Edge VM (SSH)"

    def __init__(
        self,
        *,
        ssh_conn_id: str = default_conn_name,
        connect_attempts: int = 3,
        retry_backoff_s: float = 2.0,
        command_timeout_s: float = 120.0,
        reference_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.connect_attempts = max(1, int(connect_attempts))
        self.retry_backoff_s = retry_backoff_s
        self.command_timeout_s = command_timeout_s
        # The Airflow host's clock the VM is compared with; injectable so a test can skew it.
        self.reference_clock = reference_clock
        self._ssh_hook = None

    @property
    def ssh_hook(self):
        if self._ssh_hook is None:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            # conn_retry_attempts=1: SSHHook retries every exception; this hook retries connection errors only.
            hook = SSHHook(ssh_conn_id=self.ssh_conn_id, conn_retry_attempts=1)
            if hook.no_host_key_check or hook.allow_host_key_change:
                raise EdgeVMAuthError(
                    f"connection {self.ssh_conn_id!r} disables host key verification "
                    "(no_host_key_check or allow_host_key_change): expected a pinned host_key"
                )
            self._ssh_hook = hook
        return self._ssh_hook

    @property
    def target(self) -> str:
        hook = self.ssh_hook
        return f"{hook.username}@{hook.remote_host}:{hook.port}"

    def _host_label(self) -> str:
        hook = self.ssh_hook
        return f"{hook.remote_host}:{hook.port}"

    def _mismatch(self, got, expected) -> HostKeyMismatchError:
        return HostKeyMismatchError(
            f"edge VM {self._host_label()} presented host key {got.get_name()} {got.fingerprint}, "
            f"expected the pinned {expected.get_name()} {expected.fingerprint} (connection {self.ssh_conn_id!r}); "
            "refusing to connect. If the VM was rebuilt, verify its new key out of band and update host_key"
        )

    def connect(self) -> tuple[Any, int, float]:
        """Open the SSH connection; return (client, attempts used, seconds taken)."""
        import paramiko

        hook = self.ssh_hook
        started = time.monotonic()
        last: BaseException | None = None
        for attempt in range(1, self.connect_attempts + 1):
            hook.client = None
            try:
                client = hook.get_conn()
            except paramiko.BadHostKeyException as err:
                raise self._mismatch(err.key, err.expected_key) from None
            except paramiko.AuthenticationException as err:
                raise EdgeVMAuthError(
                    f"edge VM {self.target} refused authentication ({err}): expected the key in connection "
                    f"{self.ssh_conn_id!r} to be authorised for {hook.username}"
                ) from None
            except (OSError, EOFError, paramiko.SSHException) as err:
                transient = isinstance(err, (OSError, EOFError)) or "banner" in str(err).lower()
                if not transient:
                    raise EdgeVMError(f"SSH to edge VM {self.target} failed: {err}") from None
                last = err
                self.log.warning("SSH connect to %s failed (attempt %d/%d): %s", self.target, attempt, self.connect_attempts, err)
                if attempt < self.connect_attempts:
                    time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
                continue
            got = client.get_transport().get_remote_server_key()
            if hook.host_key is not None and got != hook.host_key:
                # SSHHook lets ~/.ssh/known_hosts win over the pinned key; the pin is what we trust.
                client.close()
                raise self._mismatch(got, hook.host_key)
            return client, attempt, time.monotonic() - started
        raise ConnectionError(f"{self.connect_attempts} attempt(s) over {time.monotonic() - started:.1f}s: {last}")

    def _run(self, client, command: str, stdin: str | None = None) -> tuple[int, str, str]:
        stdin_f, stdout_f, stderr_f = client.exec_command(command, timeout=self.command_timeout_s)
        try:
            if stdin is not None:
                stdin_f.write(stdin)
            stdin_f.channel.shutdown_write()
            out = stdout_f.read().decode("utf-8", errors="replace")
            err = stderr_f.read().decode("utf-8", errors="replace")
            return stdout_f.channel.recv_exit_status(), out, err
        except socket.timeout:
            raise EdgeVMError(f"command {command!r} on edge VM {self.target} did not finish in {self.command_timeout_s:g}s") from None

    def measure_clock(self, client) -> tuple[float, float]:
        """(skew, uncertainty) in seconds: VM time minus the midpoint of the local send/receive times."""
        t0 = self.reference_clock()
        rc, out, err = self._run(client, "date +%s.%N")
        t1 = self.reference_clock()
        if rc != 0:
            raise EdgeVMError(f"'date' on edge VM {self.target} failed ({rc}): {err.strip()}")
        remote = float(out.strip())
        return remote - (t0 + t1) / 2, (t1 - t0) / 2

    def readiness_report(self, params: ReadinessParams) -> dict[str, Any]:
        """Run every check in one SSH session and return the report (never raises for a failed check)."""
        report: dict[str, Any] = {
            "host": self._host_label(),
            "user": self.ssh_hook.username,
            "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "checks": [],
        }
        threshold = f"connect within {self.ssh_hook.conn_timeout or 'default'}s, key auth, pinned host key"
        try:
            client, attempts, seconds = self.connect()
        except ConnectionError as err:
            report["checks"].append(check("ssh", threshold, "unreachable", FAIL, f"cannot connect to {self.target}: {err}"))
            report["status"] = FAIL
            return report
        try:
            skew, uncertainty = self.measure_clock(client)
            rc, out, err = self._run(client, "bash -s", stdin=render_probe(params))
            probe = parse_probe(out)
        finally:
            client.close()
        report["checks"].append(
            check(
                "ssh",
                threshold,
                "connected",
                PASS,
                f"{self.target} as {probe.get('user', '?')} on {probe.get('hostname', '?')}, "
                f"{seconds:.2f}s, {attempts} attempt(s)",
            )
        )
        report["checks"].append(clock_check(skew, uncertainty, params.max_clock_skew_s))
        if rc != 0 and probe.get("done") != "1":
            self.log.warning("Probe script exit status %s, stderr: %s", rc, err.strip()[-2000:])
        report["checks"].extend(build_checks(probe, params))
        report["status"] = overall_status(report["checks"])
        return report

    def test_connection(self) -> tuple[bool, str]:
        try:
            client, _, _ = self.connect()
            client.close()
            return True, f"connected to {self.target}"
        except Exception as err:
            return False, str(err)
