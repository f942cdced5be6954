"""Edge VM readiness over SSH: is the VM fit to run a training container right now?

One SSH connection (the SSH provider's SSHHook, host key pinned in the connection), two exec calls:
a ``date`` for the clock, then one bash probe script fed on stdin that gathers everything else.
Each check becomes ``{name, threshold, value, status: pass|warn|fail, detail}``; the report holds all
of them, so an operator sees every problem at once rather than the first.

The probe needs only bash and coreutils on the VM (Ubuntu has them), plus ``docker`` for the Docker
checks, ``ssh-keygen``/``sshd`` for the sshd posture and ``nvidia-smi`` when a GPU is required.

sshd posture without root: ``sshd -T`` refuses to run unless it can load a host key, and the real
host keys are root-only. The probe makes a throwaway key in a temp dir and runs
``sshd -T -f <config> -h <throwaway key> -C user=...,addr=...`` as the login user, which only needs
the config (and its Includes) to be readable, as they are on Ubuntu. The config is the one the
serving daemon was started with (its ``-f``/``-o`` arguments are read from the listener's process
title, an ancestor of the session), else ``/etc/ssh/sshd_config``. If that fails, it tries
``sudo -n sshd -T ...``, which works on a VM whose sudoers has e.g.
``edgeops ALL=(root) NOPASSWD: /usr/sbin/sshd -T *``. If neither works, PasswordAuthentication is
still observed live (the VM's ssh client sends the daemon an unauthenticated "none" request and
reads the methods it offers), while PermitRootLogin is reported unknown (warn or fail by policy).
"""

from __future__ import annotations

import base64
import datetime as dt
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseHook

from edge_training.exceptions import EdgeVMError, HostKeyMismatchError

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


def as_bool(value: Any) -> bool:
    """Templated booleans arrive as strings ("False") unless the DAG renders native objects."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", "", "none"):
            return False
        raise EdgeVMError(f"expected a boolean, found {value!r}")
    return bool(value)


def check(name: str, threshold: Any, value: Any, status: str, detail: str) -> dict[str, Any]:
    return {"name": name, "threshold": threshold, "value": value, "status": status, "detail": detail}


# ---------------------------------------------------------------------------------------------
# The probe script (runs on the VM under bash, reads its parameters from the assignments on top)
# ---------------------------------------------------------------------------------------------
PROBE_SCRIPT = r"""
set -u
export LC_ALL=C
emit() { printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | head -c 4000 | base64 | tr -d '\n')"; }

emit user "$(id -un)"
emit hostname "$(hostname 2>/dev/null || uname -n)"

# -- Docker daemon and the training image
if [ -n "$P_DOCKER_HOST" ]; then export DOCKER_HOST="$P_DOCKER_HOST"; fi
emit docker_host "${DOCKER_HOST:-default}"
if command -v docker >/dev/null 2>&1; then
  out=$(timeout "$P_DOCKER_TIMEOUT" docker version --format '{{.Server.Version}}' 2>&1); rc=$?
  emit docker_rc "$rc"; emit docker_out "$out"
  if [ "$rc" -eq 0 ] && [ -n "$P_IMAGE" ]; then
    out=$(timeout "$P_DOCKER_TIMEOUT" docker image inspect --format '{{.Id}} {{.Size}}' -- "$P_IMAGE" 2>&1); rc=$?
    if [ "$rc" -ne 0 ] && [ "$P_PULL" = 1 ]; then
      pull=$(timeout "$P_DOCKER_TIMEOUT" docker pull -q -- "$P_IMAGE" 2>&1); prc=$?
      emit image_pull_rc "$prc"; emit image_pull_out "$pull"
      if [ "$prc" -eq 0 ]; then
        out=$(timeout "$P_DOCKER_TIMEOUT" docker image inspect --format '{{.Id}} {{.Size}}' -- "$P_IMAGE" 2>&1); rc=$?
      fi
    fi
    emit image_rc "$rc"; emit image_out "$out"
  fi
else
  emit docker_rc 127; emit docker_out "docker CLI not found on PATH ($PATH)"
fi

# -- Disk at the work directory (or its nearest existing parent) and memory
wd="${P_WORKDIR:-$HOME}"
case "$wd" in "~") wd="$HOME" ;; "~/"*) wd="$HOME/${wd#\~/}" ;; esac
d="$wd"
while [ ! -e "$d" ] && [ "$d" != "/" ] && [ "$d" != "." ]; do d=$(dirname -- "$d"); done
emit workdir "$wd"; emit disk_path "$d"
if [ -e "$wd" ]; then emit workdir_exists 1; else emit workdir_exists 0; fi
if [ -w "$d" ]; then emit disk_writable 1; else emit disk_writable 0; fi
emit disk_avail_kib "$(df -Pk -- "$d" 2>/dev/null | awk 'NR==2{print $4}')"
emit mem_avail_kib "$(awk '/^MemAvailable:/{print $2}' /proc/meminfo 2>/dev/null)"

# -- TCP connect from the VM to the Stack Hub blob endpoint
if [ -n "$P_BLOB_HOST" ]; then
  t0=$(date +%s%N)
  out=$(timeout "$P_TCP_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$P_BLOB_HOST" "$P_BLOB_PORT" 2>&1); rc=$?
  t1=$(date +%s%N)
  emit tcp_rc "$rc"; emit tcp_out "$out"; emit tcp_ms "$(( (t1 - t0) / 1000000 ))"
fi

# -- GPU, only when asked for
if [ "$P_GPU" = 1 ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    out=$(timeout 30 nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1); rc=$?
  else
    out="nvidia-smi not found on PATH"; rc=127
  fi
  emit gpu_rc "$rc"; emit gpu_out "$out"
fi

# -- sshd posture: the effective config of the daemon serving this session
SSHD=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
cfg="$P_SSHD_CONFIG"; opts=""; listener=""
pid=$$
for _ in 1 2 3 4 5 6 7 8; do
  pid=$(awk '/^PPid:/{print $2}' "/proc/$pid/status" 2>/dev/null)
  if [ -z "$pid" ] || [ "$pid" -le 1 ]; then break; fi
  args=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)
  case "$args" in
    *"[listener]"*) listener="$args"; break ;;
    *sshd*) listener="$args" ;;
  esac
done
emit sshd_listener "$listener"
if [ -n "$listener" ]; then
  set -f; set -- ${listener%%\[listener\]*}; set +f
  found_cfg=""
  while [ $# -gt 0 ]; do
    case "$1" in
      -f) found_cfg="${2:-}"; shift ;;
      -o) opts="$opts -o ${2:-}"; shift ;;
    esac
    shift
  done
  if [ -z "$cfg" ] && [ -n "$found_cfg" ]; then cfg="$found_cfg"; fi
fi
[ -n "$cfg" ] || cfg=/etc/ssh/sshd_config
emit sshd_config "$cfg"; emit sshd_opts "$opts"
set -- ${SSH_CONNECTION:-127.0.0.1 0 127.0.0.1 22}
caddr=$1; laddr=$3; lport=$4
keydir=$(mktemp -d 2>/dev/null || echo "")
if [ -n "$keydir" ]; then ssh-keygen -q -t ed25519 -N '' -f "$keydir/k" </dev/null >/dev/null 2>&1; fi
me=$(id -un)
for who in login root; do
  if [ "$who" = login ]; then u="$me"; else u=root; fi
  spec="user=$u,host=$caddr,addr=$caddr,laddr=$laddr,lport=$lport"
  how=user
  out=$("$SSHD" -T -f "$cfg" -h "$keydir/k" $opts -C "$spec" 2>&1 </dev/null); rc=$?
  if [ "$rc" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    sout=$(sudo -n "$SSHD" -T -f "$cfg" $opts -C "$spec" 2>&1 </dev/null); src=$?
    if [ "$src" -eq 0 ]; then out="$sout"; rc=0; how=sudo; fi
  fi
  emit "sshd_${who}_rc" "$rc"; emit "sshd_${who}_how" "$how"
  if [ "$rc" -eq 0 ]; then
    emit "sshd_${who}_settings" "$(printf '%s\n' "$out" | awk '$1=="passwordauthentication"||$1=="kbdinteractiveauthentication"||$1=="usepam"||$1=="permitrootlogin"||$1=="permitemptypasswords"{print $1"="$2}')"
  else
    emit "sshd_${who}_err" "$(printf '%s' "$out" | tail -n 3)"
    if [ "$who" = login ]; then login_failed=1; fi
  fi
done
[ -n "$keydir" ] && rm -rf -- "$keydir"
# Fallback when the config cannot be read: ask the serving daemon itself which methods it offers this
# user, with an unauthenticated "none" request from the VM to its own listening address.
# It offers no credential and records nothing: the host key is neither trusted nor stored
# (UserKnownHostsFile=/dev/null), only the daemon's list of offered methods is read.
if [ "${login_failed:-0}" = 1 ] && command -v ssh >/dev/null 2>&1; then
  out=$(timeout 15 ssh -F /dev/null -o BatchMode=yes -o PreferredAuthentications=none -o PubkeyAuthentication=no \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=ERROR \
        -p "$lport" "$me@$laddr" true 2>&1 </dev/null)
  emit sshd_live_methods "$(printf '%s\n' "$out" | sed -n 's/.*Permission denied (\([^)]*\)).*/\1/p' | tail -n 1)"
fi
emit done 1
"""


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
                raise EdgeVMError(
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
                raise EdgeVMError(
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
