#!/usr/bin/env bash
# Edge VM readiness probe: is the VM fit to run a training container right now?
#
# Not run from this file. EdgeVMHook (edge_training/hooks/edge_vm.py) reads it as package data,
# prepends the parameters as shell-quoted assignments (P_IMAGE, P_WORKDIR, P_DOCKER_HOST,
# P_DOCKER_TIMEOUT, P_PULL, P_BLOB_HOST, P_BLOB_PORT, P_TCP_TIMEOUT, P_GPU, P_SSHD_CONFIG; see
# render_probe in edge_training/hooks/edge_vm_checks.py) and feeds the result to `bash -s` on the VM
# over stdin, in the same SSH session as the clock reading. It prints one `key<TAB>base64(value)` line
# per observation and `done` last; edge_vm_checks.py turns those into the report's checks.
#
# Needs only bash and coreutils on the VM (Ubuntu has them), plus `docker` for the Docker checks,
# `ssh-keygen`/`sshd` for the sshd posture and `nvidia-smi` when a GPU is required.
#
# sshd posture without root: `sshd -T` refuses to run unless it can load a host key, and the real
# host keys are root-only. The probe makes a throwaway key in a temp dir and runs
# `sshd -T -f <config> -h <throwaway key> -C user=...,addr=...` as the login user, which only needs
# the config (and its Includes) to be readable, as they are on Ubuntu. The config is the one the
# serving daemon was started with (its -f/-o arguments are read from the listener's process
# title, an ancestor of the session), else /etc/ssh/sshd_config. If that fails, it tries
# `sudo -n sshd -T ...`, which works on a VM whose sudoers has e.g.
# `edgeops ALL=(root) NOPASSWD: /usr/sbin/sshd -T *`. If neither works, PasswordAuthentication is
# still observed live (the VM's ssh client sends the daemon an unauthenticated "none" request and
# reads the methods it offers), while PermitRootLogin is reported unknown (warn or fail by policy).

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
