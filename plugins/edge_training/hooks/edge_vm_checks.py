"""Pure logic of the edge VM readiness checks: no SSH, no Airflow connection, no VM.

EdgeVMHook (hooks/edge_vm.py) runs the probe (probes/edge_vm_readiness.sh) on the VM and hands its
output here: these functions render the probe with its parameters, parse what it printed and turn it
into the report's checks, each ``{name, threshold, value, status: pass|warn|fail, detail}``. They are
kept apart from the hook so they can be unit-tested from canned probe output, without a VM.

sshd posture: PasswordAuthentication and PermitRootLogin come from ``sshd -T`` as the login user (or
``sudo -n``); when neither could read the config, PasswordAuthentication falls back to the methods the
serving daemon offers, and PermitRootLogin is reported unknown. Anything not ``no`` (or unknown) is a
warning or a failure according to ``sshd_policy``.
"""

from __future__ import annotations

import base64
import importlib.resources
import shlex
from dataclasses import dataclass
from typing import Any

from edge_training.exceptions import EdgeVMError

PASS, WARN, FAIL = "pass", "warn", "fail"
_GIB_KIB = 1024 * 1024
SSHD_POLICIES = ("warn", "fail")


@dataclass(frozen=True)
class ReadinessParams:
    """What the checks compare against. Built from (templated, so possibly string) operator args."""

    image: str | None = None
    workdir: str = ""
    min_disk_gib: float = 20.0
    min_memory_gib: float = 2.0
    max_clock_skew_s: float = 30.0
    blob_endpoint: str | None = None  # "host:port", reached from the VM
    require_gpu: bool = False
    sshd_policy: str = "warn"
    docker_host: str | None = None  # DOCKER_HOST on the VM; None keeps the VM's default
    sshd_config: str | None = None  # None: discover from the serving daemon, else /etc/ssh/sshd_config
    pull_missing_image: bool = False
    tcp_timeout_s: float = 5.0
    docker_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.sshd_policy not in SSHD_POLICIES:
            raise EdgeVMError(f"sshd_policy {self.sshd_policy!r} is invalid: expected one of {SSHD_POLICIES}")
        for name in ("min_disk_gib", "min_memory_gib", "max_clock_skew_s", "tcp_timeout_s", "docker_timeout_s"):
            if getattr(self, name) < 0:
                raise EdgeVMError(f"{name} must be >= 0, found {getattr(self, name)}")
        if self.blob_endpoint:
            split_endpoint(self.blob_endpoint)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` → (host, port), refusing anything a shell or /dev/tcp could misread."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgeVMError(f"blob endpoint {endpoint!r} is invalid: expected host:port")
    if not all(ch.isalnum() or ch in ".-" for ch in host):
        raise EdgeVMError(f"blob endpoint host {host!r} is invalid: expected a DNS name or IPv4 address")
    return host, int(port)


def check(name: str, threshold: Any, value: Any, status: str, detail: str) -> dict[str, Any]:
    return {"name": name, "threshold": threshold, "value": value, "status": status, "detail": detail}


# The probe as shipped (probes/edge_vm_readiness.sh): it runs on the VM under bash and reads its parameters
# from the assignments render_probe puts on top.
PROBE_SCRIPT = importlib.resources.files("edge_training.probes").joinpath("edge_vm_readiness.sh").read_text()


def render_probe(params: ReadinessParams) -> str:
    """The probe script with its parameters as shell-quoted assignments on top."""
    host, port = split_endpoint(params.blob_endpoint) if params.blob_endpoint else ("", 0)
    values = {
        "P_IMAGE": params.image or "",
        "P_WORKDIR": params.workdir or "",
        "P_DOCKER_HOST": params.docker_host or "",
        "P_DOCKER_TIMEOUT": f"{params.docker_timeout_s:g}",
        "P_PULL": "1" if params.pull_missing_image else "0",
        "P_BLOB_HOST": host,
        "P_BLOB_PORT": str(port or ""),
        "P_TCP_TIMEOUT": f"{params.tcp_timeout_s:g}",
        "P_GPU": "1" if params.require_gpu else "0",
        "P_SSHD_CONFIG": params.sshd_config or "",
    }
    head = "\n".join(f"{k}={shlex.quote(v)}" for k, v in values.items())
    return head + "\n" + PROBE_SCRIPT


def parse_probe(stdout: str) -> dict[str, str]:
    """``key<TAB>base64(value)`` lines → dict."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, encoded = line.partition("\t")
        if not sep:
            continue
        try:
            found[key] = base64.b64decode(encoded).decode("utf-8", errors="replace")
        except ValueError:
            found[key] = ""
    return found


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


# ---------------------------------------------------------------------------------------------
# Checks from the probe output (pure)
# ---------------------------------------------------------------------------------------------
def clock_check(skew_s: float, uncertainty_s: float, max_skew_s: float) -> dict[str, Any]:
    """Fail when the skew is beyond the threshold even at the edge of the measurement's uncertainty."""
    value = round(skew_s, 3)
    detail = (
        f"VM clock is {abs(skew_s):.3f}s {'ahead of' if skew_s >= 0 else 'behind'} the Airflow host "
        f"(±{uncertainty_s:.3f}s, half the round trip); AML and storage auth break on skew"
    )
    if abs(skew_s) - uncertainty_s > max_skew_s:
        status = FAIL
    elif abs(skew_s) + uncertainty_s > max_skew_s:
        status = WARN
    else:
        status = PASS
    return check("clock_skew_s", max_skew_s, value, status, detail)


def build_checks(probe: dict[str, str], params: ReadinessParams) -> list[dict[str, Any]]:
    """Turn the probe's raw values into the report's checks (everything except ssh and clock)."""
    checks: list[dict[str, Any]] = []
    if probe.get("done") != "1":
        checks.append(
            check("probe", "completed", "incomplete", FAIL, "the probe script stopped before its end; see the task log")
        )

    # Docker daemon and image
    docker_rc = probe.get("docker_rc")
    docker_out = (probe.get("docker_out") or "").strip()
    docker_host = probe.get("docker_host", "default")
    if docker_rc == "0":
        checks.append(check("docker_daemon", "answers", docker_out, PASS, f"Docker server {docker_out} at {docker_host}"))
    else:
        why = "timed out" if docker_rc == "124" else docker_out or f"exit status {docker_rc}"
        checks.append(check("docker_daemon", "answers", None, FAIL, f"Docker daemon at {docker_host} did not answer: {why}"))
    if params.image:
        if docker_rc != "0":
            checks.append(check("docker_image", params.image, None, FAIL, "not checked: the Docker daemon did not answer"))
        elif probe.get("image_rc") == "0":
            image_id, _, size = (probe.get("image_out") or "").strip().partition(" ")
            size_mib = round(int(size) / 2**20, 1) if size.isdigit() else None
            pulled = " (pulled now)" if probe.get("image_pull_rc") == "0" else ""
            checks.append(
                check("docker_image", params.image, image_id[:19], PASS, f"image {params.image} present{pulled}, {size_mib} MiB")
            )
        else:
            detail = f"image {params.image} is not present on the VM: {(probe.get('image_out') or '').strip()}"
            if "image_pull_rc" in probe:
                detail += f"; pull failed: {(probe.get('image_pull_out') or '').strip()}"
            checks.append(check("docker_image", params.image, None, FAIL, detail))

    # Disk
    avail_kib = _num(probe.get("disk_avail_kib"))
    path = probe.get("disk_path", "?")
    workdir = probe.get("workdir", params.workdir)
    if avail_kib is None:
        checks.append(check("disk_free_gib", params.min_disk_gib, None, FAIL, f"could not read free space at {path}"))
    else:
        gib = round(avail_kib / _GIB_KIB, 2)
        notes = []
        status = PASS if gib >= params.min_disk_gib else FAIL
        if probe.get("workdir_exists") != "1":
            notes.append(f"work directory {workdir} does not exist yet; measured at {path}")
        if probe.get("disk_writable") != "1":
            notes.append(f"{path} is not writable by {probe.get('user', 'the login user')}")
            status = FAIL
        detail = f"{gib} GiB free at {path}, need >= {params.min_disk_gib:g} GiB"
        checks.append(check("disk_free_gib", params.min_disk_gib, gib, status, "; ".join([detail, *notes])))

    # Memory
    mem_kib = _num(probe.get("mem_avail_kib"))
    if mem_kib is None:
        checks.append(check("memory_free_gib", params.min_memory_gib, None, FAIL, "could not read MemAvailable from /proc/meminfo"))
    else:
        gib = round(mem_kib / _GIB_KIB, 2)
        status = PASS if gib >= params.min_memory_gib else FAIL
        checks.append(
            check("memory_free_gib", params.min_memory_gib, gib, status, f"{gib} GiB available, need >= {params.min_memory_gib:g} GiB")
        )

    # Blob endpoint, from the VM
    if params.blob_endpoint:
        rc = probe.get("tcp_rc")
        if rc == "0":
            checks.append(
                check("blob_endpoint_tcp", params.blob_endpoint, "connected", PASS, f"TCP connect from the VM in {probe.get('tcp_ms')} ms")
            )
        else:
            why = f"timed out after {params.tcp_timeout_s:g}s" if rc == "124" else (probe.get("tcp_out") or "").strip() or f"exit {rc}"
            checks.append(
                check("blob_endpoint_tcp", params.blob_endpoint, "unreachable", FAIL, f"the VM cannot open TCP to {params.blob_endpoint}: {why}")
            )

    # GPU
    if params.require_gpu:
        out = (probe.get("gpu_out") or "").strip()
        gpus = [line for line in out.splitlines() if line.strip()] if probe.get("gpu_rc") == "0" else []
        if gpus:
            checks.append(check("gpu", ">= 1", len(gpus), PASS, "; ".join(gpus)))
        else:
            checks.append(check("gpu", ">= 1", 0, FAIL, f"a GPU was required but none was found: {out or 'no output'}"))

    checks.extend(sshd_checks(probe, params.sshd_policy))
    return checks


def sshd_checks(probe: dict[str, str], policy: str) -> list[dict[str, Any]]:
    """PasswordAuthentication and PermitRootLogin from ``sshd -T``, warn or fail by policy."""
    cfg = probe.get("sshd_config", "?")
    opts = probe.get("sshd_opts", "").strip()
    source = f"sshd -T -f {cfg}{' ' + opts if opts else ''}"
    results = []
    login = _settings(probe.get("sshd_login_settings", "")) if probe.get("sshd_login_rc") == "0" else None
    root = _settings(probe.get("sshd_root_settings", "")) if probe.get("sshd_root_rc") == "0" else None
    unknown_hint = (
        "could not evaluate the sshd config as the login user or with sudo -n "
        f"({(probe.get('sshd_login_err') or '').strip()[:300]}); make the config readable or allow "
        "'sudo -n /usr/sbin/sshd -T *' for this user"
    )

    live = probe.get("sshd_live_methods", "").strip()
    if login is None and live:
        methods = [m.strip() for m in live.split(",") if m.strip()]
        enabled = "password" in methods or "keyboard-interactive" in methods
        results.append(
            check(
                "sshd_password_auth",
                "no",
                "yes" if enabled else "no",
                policy if enabled else PASS,
                f"sshd -T unavailable ({(probe.get('sshd_login_err') or '').strip()[:200]}); the serving daemon "
                f"offers {probe.get('user', 'the login user')} these methods: {', '.join(methods)} (asked from the VM "
                "with an unauthenticated 'none' request)",
            )
        )
    elif login is None:
        results.append(check("sshd_password_auth", "no", None, policy, unknown_hint))
    else:
        password = login.get("passwordauthentication", "?")
        kbd = login.get("kbdinteractiveauthentication", "no")
        pam = login.get("usepam", "no")
        via_kbd = kbd == "yes" and pam == "yes"
        enabled = password == "yes" or via_kbd or (root is not None and root.get("passwordauthentication") == "yes")
        value = "yes" if enabled else "no"
        detail = (
            f"{source} (as {probe.get('sshd_login_how')}): passwordauthentication {password}, "
            f"kbdinteractiveauthentication {kbd}, usepam {pam}"
        )
        if via_kbd:
            detail += "; keyboard-interactive with PAM accepts passwords"
        results.append(check("sshd_password_auth", "no", value, policy if enabled else PASS, detail))

    if root is None:
        results.append(check("sshd_permit_root_login", "no", None, policy, unknown_hint))
    else:
        value = root.get("permitrootlogin", "?")
        results.append(
            check(
                "sshd_permit_root_login",
                "no",
                value,
                PASS if value == "no" else policy,
                f"{source} for user root (as {probe.get('sshd_root_how')}): permitrootlogin {value}",
            )
        )
    return results


def overall_status(checks: list[dict[str, Any]]) -> str:
    statuses = {c["status"] for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def failure_summary(report: dict[str, Any]) -> str:
    failed = [c for c in report["checks"] if c["status"] == FAIL]
    lines = [f"{c['name']} (threshold {c['threshold']}, found {c['value']}): {c['detail']}" for c in failed]
    return f"edge VM {report['host']} is not ready: {len(failed)} check(s) failed: " + "; ".join(lines)
