"""Host job mode of the AML double: a job's command runs as a plain process on the attached VM, no container.

For load benchmarks (bench/triggerer.py runs 500 sleeping jobs at once), where a container, an SSH connection
and a monitoring thread per job (the default mode, runner.py) would swamp a 2-core machine before the thing
measured (the client) is loaded at all. Started with ``--job-mode host`` (``AML_DOUBLE_JOB_MODE=host``), the
double runs every job this way; the API the SDK sees is the same (statuses, run history, log URLs, cancel).

The job still really runs on the VM and its end is observed there: per compute, one SSH connection and one
thread. Each tick (``poll_interval``) it launches the jobs submitted since the last tick in one shell command
(``setsid nohup sh run.sh``: ``<work dir>/run.sh`` runs the command with the job's environment into
``user_logs/std_log.txt``, then writes its start and end times and its exit code), lists every running job's
log size and exit-code file with one ``stat``, copies the bytes a log grew by (SFTP) and publishes them like
the container mode does, and finishes the jobs whose exit code appeared. Every ``liveness_every_s`` it checks
that each job's process is still there (``/proc/<pid>/stat``, not a zombie): one that vanished without an exit
code fails.

What it does not do (it refuses such jobs, naming why): code snapshots, inputs and outputs. ``limits.timeout``
is enforced with ``timeout(1)``; cancel kills the job's process group. Host jobs take no compute slot
(``--max-jobs-per-compute`` bounds containers only). Work dirs: ``~/azureml-host-jobs/<job>`` on the VM,
removed when the job ends.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import shlex
import threading
import time
from typing import Any

import paramiko

log = logging.getLogger("aml-double.host-jobs")

HOST_JOBS_DIR = "azureml-host-jobs"
TIMEOUT_EXIT_CODE = 124
#: Jobs started by one SSH command at most.
LAUNCH_BATCH = 50


def job_script(command: str, env: dict[str, str], timeout_s: float | None) -> str:
    """The shell script a host job runs as: its command, its environment, then its times and exit code."""
    q = shlex.quote
    exports = "".join(f"export {k}={q(str(v))}\n" for k, v in sorted(env.items()) if k.isidentifier())
    run = f"sh -c {q(command)}"
    if timeout_s:
        run = f"timeout {max(1, int(timeout_s))} {run}"
    return (
        'cd "$(dirname "$0")"\n'
        f"{exports}"
        "date +%s.%N > start\n"
        f"{run} > user_logs/std_log.txt 2>&1 < /dev/null\n"
        "rc=$?\n"
        "date +%s.%N > end\n"
        'echo "$rc" > exit_code.tmp && mv exit_code.tmp exit_code\n'
    )


def launch_command(jobs: list[tuple[str, str]]) -> str:
    """One shell command starting every (job name, script) pair detached; it prints ``<job> <pid>`` each."""
    q = shlex.quote
    parts = [f'base="$HOME/{HOST_JOBS_DIR}"', 'mkdir -p "$base"']
    for name, script in jobs:
        marker = f"EOF_{secrets.token_hex(8)}"
        parts.append(
            f'd="$base/"{q(name)}; rm -rf "$d"; mkdir -p "$d/user_logs" && '
            f"cat > \"$d/run.sh\" <<'{marker}'\n{script}{marker}\n"
            f'setsid nohup sh "$d/run.sh" > /dev/null 2>&1 < /dev/null & echo {q(name)} $!'
        )
    return "\n".join(parts) + "\n"


def parse_stat(output: str) -> tuple[dict[str, int], set[str]]:
    """``stat -c '%n %s'`` lines of ``<job>/user_logs/std_log.txt`` and ``<job>/exit_code``: log sizes,
    and the jobs whose exit code is written."""
    sizes: dict[str, int] = {}
    ended: set[str] = set()
    for line in output.splitlines():
        path, _, size = line.rpartition(" ")
        name = path.split("/", 1)[0]
        if path.endswith("/user_logs/std_log.txt") and size.isdigit():
            sizes[name] = int(size)
        elif path.endswith("/exit_code"):
            ended.add(name)
    return sizes, ended


def outcome(exit_code: int | None, timeout_s: float | None) -> tuple[str, str | None]:
    """The AML status and error of a host job that ended with ``exit_code``."""
    if exit_code == 0:
        return "Completed", None
    if exit_code == TIMEOUT_EXIT_CODE and timeout_s:
        return "Failed", f"The job exceeded its limits.timeout of {timeout_s:g} s and was stopped."
    return "Failed", f"the job's command exited with {exit_code}"


class HostJobs:
    """Runs the double's jobs as processes on their compute's VM (see the module docstring)."""

    def __init__(self, runner: Any, *, poll_interval: float = 1.0, liveness_every_s: float = 30.0) -> None:
        self.runner = runner
        self.poll_interval = poll_interval
        self.liveness_every_s = liveness_every_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[str] = []
        self._cancel: set[str] = set()
        #: name -> {"compute", "ssh", "workdir", "pid", "offset", "published", "timeout"}
        self._active: dict[str, dict] = {}
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._thread: threading.Thread | None = None
        self._last_liveness = time.monotonic()

    # ------------------------------------------------------------------ API used by the runner
    def submit(self, name: str) -> None:
        with self._lock:
            self._pending.append(name)
        self._ensure_thread()

    def reattach(self, name: str, runtime: dict) -> None:
        """After a restart: follow a job whose process was started by an earlier double."""
        plan = self.runner.plan(name)
        with self._lock:
            self._active[name] = {"compute": plan["compute"], "ssh": plan["ssh"], "workdir": runtime["workdir"],
                                  "pid": runtime["host_pid"], "offset": self._local_size(name),
                                  "published": 0.0, "timeout": plan["timeout"]}
        self._ensure_thread()

    def cancel(self, name: str) -> bool:
        """Ask for the job to be stopped; False when this mode does not know the job."""
        with self._lock:
            known = name in self._active or name in self._pending
            if known:
                self._cancel.add(name)
        if known:
            self._wake.set()
        return known

    def active_count(self) -> int:
        with self._lock:
            return len(self._active) + len(self._pending)

    # ------------------------------------------------------------------ the one thread
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="host-jobs", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad tick (e.g. an SSH drop)
                log.exception("host jobs: tick failed; trying again")
                time.sleep(self.poll_interval)

    def _tick(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            self._launch(pending)
        with self._lock:
            canceled = [n for n in self._cancel if n in self._active]
            self._cancel -= set(canceled)
        for name in canceled:
            self._kill(name)
        with self._lock:
            by_compute: dict[str, list[str]] = {}
            for name, job in self._active.items():
                by_compute.setdefault(job["compute"], []).append(name)
        check_liveness = time.monotonic() - self._last_liveness >= self.liveness_every_s
        for compute, names in by_compute.items():
            self._follow(compute, names, check_liveness=check_liveness)
        if check_liveness:
            self._last_liveness = time.monotonic()

    # ------------------------------------------------------------------ steps
    def _client(self, compute: str, ssh: dict) -> paramiko.SSHClient:
        client = self._clients.get(compute)
        transport = client.get_transport() if client is not None else None
        if transport is None or not transport.is_active():
            client = self.runner.connect(ssh)
            self._clients[compute] = client
        return client

    def _run(self, compute: str, ssh: dict, command: str, timeout: float = 120) -> str:
        try:
            return self.runner.run(self._client(compute, ssh), command, check=True, timeout=timeout)
        except (paramiko.SSHException, OSError):
            self._clients.pop(compute, None)  # reconnect at the next call
            raise

    def _run_script(self, compute: str, ssh: dict, script: str, timeout: float = 300) -> str:
        """Run a shell script fed on stdin (``sh -s``): a batch of launches is too long for a command line."""
        from devstack.aml.runner import JobError

        try:
            stdin, stdout, stderr = self._client(compute, ssh).exec_command("sh -s", timeout=timeout)
            stdin.write(script)
            stdin.channel.shutdown_write()
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            rc = stdout.channel.recv_exit_status()
        except (paramiko.SSHException, OSError):
            self._clients.pop(compute, None)
            raise
        if rc != 0:
            raise JobError(f"on the VM, the launch script exited with {rc}: {(err or out).strip()[:500]}")
        return out

    def _local_size(self, name: str) -> int:
        path = self.runner.log_path(name)
        return path.stat().st_size if path.exists() else 0

    def _launch(self, names: list[str]) -> None:
        from devstack.aml.runner import JobError

        planned: dict[str, list[tuple[str, dict]]] = {}
        for name in names:
            job = self.runner.store.get_job(name)
            if job is None or job["status"] in self.runner_terminal():
                continue
            with self._lock:
                canceled = name in self._cancel
                self._cancel.discard(name)
            if canceled:
                self.runner._finish(name, "Canceled", error=None)
                continue
            try:
                plan = self.runner.plan(name)
                unsupported = [what for what, present in (("a code snapshot", plan["code"]),
                                                           ("inputs", plan["inputs"]),
                                                           ("outputs", plan["outputs"])) if present]
                if unsupported:
                    raise JobError(f"this AML double runs jobs in host mode (--job-mode host: a plain process on "
                                   f"the VM, for load tests), which supports no {', '.join(unsupported)}")
            except JobError as exc:
                self.runner._finish(name, "Failed", error=str(exc))
                continue
            self.runner._set(name, "Preparing", start=None)
            planned.setdefault(plan["compute"], []).append((name, plan))
        for compute, all_jobs in planned.items():
            for first in range(0, len(all_jobs), LAUNCH_BATCH):
                self._launch_batch(compute, all_jobs[first:first + LAUNCH_BATCH])

    def _launch_batch(self, compute: str, jobs: list[tuple[str, dict]]) -> None:
        from devstack.aml.runner import JobError

        ssh = jobs[0][1]["ssh"]
        scripts = [(name, job_script(plan["command"], plan["env"], plan["timeout"])) for name, plan in jobs]
        try:
            home = self._run(compute, ssh, "echo $HOME").strip()
            out = self._run_script(compute, ssh, launch_command(scripts))
        except (JobError, paramiko.SSHException, OSError) as exc:
            for name, _plan in jobs:
                self.runner._finish(name, "Failed", error=f"starting the job on the VM failed: {exc}")
            return
        pids = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        now = time.time()
        for name, plan in jobs:
            pid = pids.get(name, "").strip()
            if not pid.isdigit():
                self.runner._finish(name, "Failed",
                                    error=f"the VM did not start the job's process ({out[-300:]!r})")
                continue
            workdir = posixpath.join(home, HOST_JOBS_DIR, name)
            local = self.runner.log_path(name)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(b"")
            self.runner.store.update_job(name, workdir=workdir, host_pid=int(pid), mode="host")
            self.runner._set(name, "Running", start=now, command_start=now)
            with self._lock:
                self._active[name] = {"compute": compute, "ssh": ssh, "workdir": workdir, "pid": int(pid),
                                      "offset": 0, "published": 0.0, "timeout": plan["timeout"]}
        log.info("host jobs: started %d job(s) on %s", len(jobs), compute)

    def runner_terminal(self) -> set[str]:
        from devstack.aml.runner import TERMINAL

        return TERMINAL

    def _follow(self, compute: str, names: list[str], *, check_liveness: bool) -> None:
        with self._lock:
            jobs = {n: dict(self._active[n]) for n in names if n in self._active}
        if not jobs:
            return
        ssh = next(iter(jobs.values()))["ssh"]
        q = shlex.quote
        out = self._run(compute, ssh, f'cd "$HOME/{HOST_JOBS_DIR}" 2>/dev/null && '
                                      "stat -c '%n %s' -- */user_logs/std_log.txt */exit_code 2>/dev/null; true")
        sizes, ended = parse_stat(out)
        vanished: set[str] = set()
        if check_liveness:
            # Alive: /proc/<pid>/stat exists and its state is not Z (an orphan's zombie lingers where the
            # VM's init does not reap); checked before the exit code, which a finished job wrote first.
            checks = "".join(f"alive {job['pid']} || [ -e {q(job['workdir'])}/exit_code ] || echo {q(name)}\n"
                             for name, job in jobs.items() if name not in ended)
            if checks:
                checks = ('alive() { read -r _ _ st _ 2>/dev/null < "/proc/$1/stat" && [ "$st" != Z ]; }\n'
                          + checks)
                vanished = {line.strip() for line in self._run(compute, ssh, checks).splitlines() if line.strip()}
        grown = [n for n, job in jobs.items() if sizes.get(n, 0) > job["offset"] or n in ended]
        if grown:
            sftp = self._client(compute, ssh).open_sftp()
            try:
                for name in grown:
                    self._copy_log(sftp, name, jobs[name], final=name in ended)
            finally:
                sftp.close()
        finished = [n for n in jobs if n in ended]
        if finished:
            lines = self._run(compute, ssh, "".join(
                f"echo {q(n)} $(cat {q(jobs[n]['workdir'])}/exit_code) $(cat {q(jobs[n]['workdir'])}/start) "
                f"$(cat {q(jobs[n]['workdir'])}/end)\n" for n in finished))
            for line in lines.splitlines():
                parts = line.split()
                if len(parts) != 4 or parts[0] not in jobs:
                    continue
                name, code, start, end = parts
                status, error = outcome(int(code) if code.lstrip("-").isdigit() else None, jobs[name]["timeout"])
                self.runner.store.update_job(name, command_start=float(start), command_end=float(end))
                self.runner._set(name, "Finalizing", command_end=float(end))
                self.runner._finish(name, status, error=error, exit_code=int(code) if code.isdigit() else None)
            self._remove(compute, ssh, {n: jobs[n] for n in finished})
        for name in vanished:
            self.runner._finish(name, "Failed", error="the job's process on the VM ended without an exit code "
                                                      "(killed, or the VM restarted)")
            self._remove(compute, ssh, {name: jobs[name]})

    def _copy_log(self, sftp: paramiko.SFTPClient, name: str, job: dict, *, final: bool) -> None:
        local = self.runner.log_path(name)
        offset = self.runner._copy_log(sftp, f"{job['workdir']}/user_logs/std_log.txt", local, job["offset"])
        now = time.monotonic()
        if offset != job["offset"] and (final or now - job["published"] > 1.0):
            self.runner._publish_log(name, local)
            job["published"] = now
        job["offset"] = offset
        with self._lock:
            if name in self._active:
                self._active[name].update(offset=offset, published=job["published"])

    def _kill(self, name: str) -> None:
        with self._lock:
            job = self._active.get(name)
        if job is None:
            return
        try:
            self._run(job["compute"], job["ssh"], f"kill -TERM -{int(job['pid'])} 2>/dev/null; true")
        except Exception as exc:  # noqa: BLE001 - the job is still marked canceled; its dir is removed below
            log.warning("host jobs: killing %s failed: %s", name, exc)
        self.runner._finish(name, "Canceled", error=None)
        self._remove(job["compute"], job["ssh"], {name: job})

    def _remove(self, compute: str, ssh: dict, jobs: dict[str, dict]) -> None:
        dirs = " ".join(shlex.quote(job["workdir"]) for job in jobs.values())
        try:
            self._run(compute, ssh, f"rm -rf {dirs}")
        except Exception as exc:  # noqa: BLE001 - a left-over dir holds no secret (no keys are staged)
            log.warning("host jobs: removing work dirs failed: %s", exc)
        with self._lock:
            for name in jobs:
                self._active.pop(name, None)
