"""The AML double's host job mode (devstack/aml/host_jobs.py) and its ranged log reads, with no stack.

The VM is this machine's own shell: the commands the double would send over SSH run through ``sh`` with
HOME in tmp_path, and its SFTP reads are plain file reads, so the job scripts, the launch batch, the one
``stat`` per tick, cancel and the job's statuses all run for real.
"""

from __future__ import annotations

import os
import subprocess
import time
import types
from pathlib import Path

import pytest

from devstack.aml.host_jobs import HostJobs, job_script, launch_command, outcome, parse_stat
from devstack.aml.metadata_store import Store
from devstack.aml.routes_jobs import JobRoutes
from devstack.aml.runner import JobRunner

B = "/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w"


class LocalShellHostJobs(HostJobs):
    """HostJobs whose VM is a local shell with HOME=<home>."""

    def __init__(self, runner: JobRunner, home: Path) -> None:
        super().__init__(runner, poll_interval=0.05, liveness_every_s=0.2)
        self.home = home
        self.commands: list[str] = []

    def _shell(self, argv: list[str], stdin: str | None = None) -> str:
        env = {**os.environ, "HOME": str(self.home)}
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60)
        if proc.returncode != 0:
            from devstack.aml.runner import JobError

            raise JobError(f"exit {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def _run(self, compute: str, ssh: dict, command: str, timeout: float = 120) -> str:
        self.commands.append(command)
        return self._shell(["sh", "-c", command])

    def _run_script(self, compute: str, ssh: dict, script: str, timeout: float = 300) -> str:
        self.commands.append("sh -s")
        return self._shell(["sh", "-s"], stdin=script)

    def _client(self, compute: str, ssh: dict):
        return types.SimpleNamespace(open_sftp=lambda: types.SimpleNamespace(
            open=lambda path, mode: open(path, "rb"), close=lambda: None))


@pytest.fixture
def double(tmp_path):
    store = Store(path=tmp_path / "aml.sqlite")
    store.put_asset("compute", "edge-vm", {"properties": {
        "computeType": "VirtualMachine", "resourceId": "/subscriptions/x/virtualMachines/edgevm",
        "properties": {"sshPort": 22, "administratorAccount": {"username": "edgeops", "privateKeyData": "KEY"}}}})
    store.put_asset("environment", "base", {"properties": {"image": "edge-training-base:bookworm"}}, "1")
    store.put_asset("datastore", "workspaceblobstore", {"properties": {
        "accountName": "amlworkspace", "containerName": "azureml-blobstore", "endpoint": "local:1",
        "credentials": {"secrets": {"key": "a2V5"}}}})
    store.put_asset("datastore", "workspaceartifactstore", {"properties": {
        "accountName": "amlworkspace", "containerName": "azureml", "endpoint": "local:1",
        "credentials": {"secrets": {"key": "a2V5"}}}})
    runner = JobRunner(store=store, state_dir=tmp_path / "state", storage=None, known_hosts=None, ca_file=None,
                       job_mode="host")
    home = tmp_path / "vm-home"
    home.mkdir()
    runner.host_jobs = LocalShellHostJobs(runner, home)
    return runner


def submit(runner: JobRunner, name: str, command: str, **spec) -> None:
    runner.store.create_job(name, {"jobType": "Command", "command": command,
                                   "computeId": f"{B}/computes/edge-vm",
                                   "environmentId": f"{B}/environments/base/versions/1", **spec},
                            "NotStarted", {"history": [["NotStarted", time.time()]]})
    runner.submit(name)


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie lingers where pid 1 does not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_status(runner: JobRunner, name: str, statuses: set[str], timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.store.get_job(name)
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"{name} is {runner.store.get_job(name)['status']}, expected one of {statuses}")


def test_jobs_run_on_the_vm_and_end_with_their_exit_code(double):
    submit(double, "ok-job", "echo start; sleep 0.3; echo done")
    submit(double, "bad-job", "echo oops >&2; exit 3")

    ok = wait_status(double, "ok-job", {"Completed", "Failed"})
    bad = wait_status(double, "bad-job", {"Completed", "Failed"})

    assert ok["status"] == "Completed" and ok["runtime"]["exit_code"] == 0
    assert double.log_path("ok-job").read_text() == "start\ndone\n"
    runtime = ok["runtime"]
    assert runtime["command_end"] - runtime["command_start"] >= 0.3  # the VM's own clock, start to end
    assert [s for s, _ in runtime["history"]][-3:] == ["Running", "Finalizing", "Completed"]
    assert runtime["end"] >= runtime["command_end"]
    assert bad["status"] == "Failed" and "exited with 3" in bad["runtime"]["error"]
    assert double.log_path("bad-job").read_text() == "oops\n"
    deadline = time.monotonic() + 5
    while double.active_count() and time.monotonic() < deadline:  # a job is marked ended, then cleaned up
        time.sleep(0.02)
    assert not list((double.host_jobs.home / "azureml-host-jobs").iterdir())  # work dirs removed
    assert double.active_count() == 0


def test_many_jobs_start_in_one_batch_and_the_vm_is_polled_once_a_tick(double):
    for i in range(30):
        double.store.create_job(f"j{i}", {"jobType": "Command", "command": f"sleep 0.{i % 5}",
                                          "computeId": f"{B}/computes/edge-vm",
                                          "environmentId": f"{B}/environments/base/versions/1"},
                                "NotStarted", {"history": []})
    with double.host_jobs._lock:  # submitted between two ticks
        double.host_jobs._pending.extend(f"j{i}" for i in range(30))
    double.host_jobs._ensure_thread()

    for i in range(30):
        assert wait_status(double, f"j{i}", {"Completed", "Failed"})["status"] == "Completed"
    assert double.host_jobs.commands.count("sh -s") == 1  # thirty launches, one command
    stats = [c for c in double.host_jobs.commands if "stat -c" in c]
    assert all("*/user_logs/std_log.txt" in c for c in stats)  # one stat for every job, not one per job


def test_cancel_kills_the_process_and_the_job_ends_canceled(double):
    submit(double, "long-job", "echo started; sleep 30")
    job = wait_status(double, "long-job", {"Running"})
    pid = job["runtime"]["host_pid"]

    double.cancel("long-job")

    assert wait_status(double, "long-job", {"Canceled", "Failed", "Completed"})["status"] == "Canceled"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    assert not alive(pid), f"the job's process {pid} still runs after the cancel"


def test_a_process_that_vanishes_fails_its_job(double):
    submit(double, "doomed", "sleep 30")
    pid = wait_status(double, "doomed", {"Running"})["runtime"]["host_pid"]
    os.killpg(pid, 9)  # as a VM reboot or an OOM kill would: no exit code written

    job = wait_status(double, "doomed", {"Failed", "Completed", "Canceled"})

    assert job["status"] == "Failed" and "without an exit code" in job["runtime"]["error"]


def test_host_mode_refuses_outputs_and_says_why(double):
    submit(double, "with-outputs", "echo hi", outputs={"model": {"jobOutputType": "uri_folder"}})

    job = wait_status(double, "with-outputs", {"Failed"})

    assert "host mode" in job["runtime"]["error"] and "outputs" in job["runtime"]["error"]


def test_limits_timeout_stops_a_host_job():
    status, error = outcome(124, 5.0)
    assert status == "Failed" and "limits.timeout of 5 s" in error
    assert outcome(0, None) == ("Completed", None)
    assert outcome(124, None)[1] == "the job's command exited with 124"
    assert "timeout 5 sh -c" in job_script("sleep 9", {}, 5.0)


def test_scripts_quote_commands_and_environment(tmp_path):
    script = job_script("echo \"$GREETING\" 'it''s'", {"GREETING": "hello $USER; rm -rf /", "not-an-id": "x"}, None)
    out = subprocess.run(["sh", "-s"], input=launch_command([("quoted", script)]), capture_output=True, text=True,
                         env={**os.environ, "HOME": str(tmp_path)}, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("quoted ")
    workdir = tmp_path / "azureml-host-jobs" / "quoted"
    deadline = time.monotonic() + 10
    while not (workdir / "exit_code").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (workdir / "user_logs" / "std_log.txt").read_text() == "hello $USER; rm -rf / its\n"
    stat = subprocess.run(["sh", "-c", "cd azureml-host-jobs && stat -c '%n %s' -- */user_logs/std_log.txt "
                                       "*/exit_code"], capture_output=True, text=True, cwd=tmp_path).stdout
    assert parse_stat(stat) == ({"quoted": len("hello $USER; rm -rf / its\n")}, {"quoted"})


# --- ranged log reads (/_files/) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=0-", 206, b"line 1\nline 2\n", "bytes 0-13/14"),
        ("bytes=7-", 206, b"line 2\n", "bytes 7-13/14"),
        ("bytes=7-9", 206, b"lin", "bytes 7-9/14"),
        ("bytes=14-", 416, b"", "bytes */14"),  # a log that has not grown since offset 14
    ],
)
def test_a_ranged_log_read_answers_like_blob_storage(header, status, body, content_range):
    response = JobRoutes.ranged(b"line 1\nline 2\n", header)
    assert (response.status_code, response.body, response.headers["content-range"]) == (status, body, content_range)


def test_an_empty_log_answers_416_and_a_bad_range_400():
    assert JobRoutes.ranged(b"", "bytes=0-").status_code == 416
    assert JobRoutes.ranged(b"abc", "items=0-").status_code == 400
