"""The reliability and security battery's state and helpers: its case recorder, the totals counted at
their sources, and the ways its cases drive the DAG.

One module, imported by name from the conftest and every case, so all of them record into the same
``BATTERY`` (a conftest is imported by pytest under another module name than ``tests.faults.conftest``,
so state kept there would exist twice).
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from devstack.seed import seed_partition
from tests.e2e.support import DAG_ID, MODEL_NAME, Registry, partition_key

RESULTS = Path(__file__).with_name("results.json")
REPO = Path(__file__).resolve().parents[2]
TERMINAL_RUN = ("success", "failed")
LIVE_JOB_STATUSES = {"NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running", "Finalizing",
                     "CancelRequested", "Completed"}
ORPHAN_LABELS = ("azureml.job", "org.edge-training.smoke-test")


@dataclass
class Case:
    name: str
    kind: str  # fault | bad_input | security
    expected: str
    observed: str
    passed: bool


@dataclass
class Battery:
    """What the battery's cases found, plus the partitions they trained (for the totals)."""

    cases: list[Case] = field(default_factory=list)
    dates: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    lost_log_lines: int = 0
    repeated_log_lines: int = 0
    leaked_secrets: int = 0

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, name: str, kind: str, expected: str, observed: str, passed: bool) -> bool:
        """Keep a case's outcome (the last one, if it is recorded twice); side-by-side cases record from
        their threads."""
        assert kind in ("fault", "bad_input", "security"), kind
        with self._lock:
            self.cases = [c for c in self.cases if c.name != name]
            self.cases.append(Case(name, kind, expected, observed, bool(passed)))
        return bool(passed)

    def count_lost_log_lines(self, lost: int, repeated: int) -> None:
        with self._lock:
            self.lost_log_lines += lost
            self.repeated_log_lines += repeated


BATTERY = Battery()


def count_totals(stack_env: dict[str, str], battery: Battery) -> tuple[dict[str, int], dict[str, int]]:
    """The totals, and how much they were counted over (partitions, jobs, versions, images seen)."""
    from edge_training.hooks.azureml import AzureMLHook

    hook = AzureMLHook(azureml_conn_id="azureml_default")
    try:
        ml = hook.get_conn()
        jobs = [j for d in battery.dates for j in jobs_of(ml, d, since=battery.started)]
        live = Counter((j.tags["partition"], j.tags.get("data_fingerprint")) for j in jobs
                       if j.status in LIVE_JOB_STATUSES)
        versions = [m for d in battery.dates for m in versions_of(ml, d, since=battery.started)]
    finally:
        hook.close()
    per_job = Counter(m.tags.get("job_name") for m in versions)
    registry = Registry(stack_env)
    version_job = {m.version: m.tags.get("job_name") for m in versions}
    images_per_job: dict[str, set[str]] = defaultdict(set)
    for tag in registry.tags(MODEL_NAME):
        if tag in version_job:
            images_per_job[version_job[tag]].add(registry.digest(MODEL_NAME, tag))
    totals = {
        "duplicated_jobs": sum(n - 1 for n in live.values() if n > 1),
        "duplicated_model_versions": sum(n - 1 for n in per_job.values() if n > 1),
        "duplicated_images": sum(len(d) - 1 for d in images_per_job.values() if len(d) > 1),
        "lost_log_lines": battery.lost_log_lines,
        "leaked_secrets": battery.leaked_secrets,
        "orphan_containers": len(orphan_containers(stack_env)),
    }
    counted = {"partitions": len(battery.dates), "jobs": len(jobs), "model_versions": len(versions),
               "images": sum(len(d) for d in images_per_job.values())}
    return totals, counted


def orphan_containers(stack_env: dict[str, str]) -> list[str]:
    """Job and smoke-test containers left on the VM's Docker (none may outlive its job or test)."""
    import docker

    client = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")
    try:
        found = []
        for label in ORPHAN_LABELS:
            found += [c.name for c in client.containers.list(all=True, filters={"label": label})]
        return found
    finally:
        client.close()


# -- driving runs ------------------------------------------------------------------------------------

#: The partition the connection cases rerun; trained beside the bad-input cases, which never train.
TRAINED_DATE = "2026-11-17"


@dataclass
class TrainingRun:
    date: str
    run_id: str

    def wait(self, airflow) -> dict:
        run = airflow.wait_run(DAG_ID, self.run_id, timeout=900)
        assert run["state"] == "success", f"training {self.date} with good connections ended {run['state']}"
        return run


def job_puts_since(admin, since: float, *, except_dates: tuple[str, ...] = ()) -> int:
    """AML job submissions the double received since ``since`` (epoch s), leaving out some partitions'."""
    recent = admin.requests()["recent"]
    # The double keeps a bounded request log: a count over a log that no longer reaches back to ``since``
    # would miss submissions, so it fails instead.
    if recent and recent[0]["time"] > since and len(recent) >= 50_000:
        raise AssertionError(f"the AML double's request log starts after {since}: submissions would be missed")
    return sum(1 for r in recent
               if r["route"] == "PUT job" and r["time"] >= since and not any(d in r["path"] for d in except_dates))


def fresh_partition(date: str) -> str:
    """New data for ``date`` (a new fingerprint, so the run trains a new job); returns the date."""
    seed_partition(date, rows=1500 + random.randrange(3000))
    BATTERY.dates.add(date)
    return date


def quoted(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def trigger(airflow, date: str | None, *, conf: dict | None = None, key: str | None = None) -> str:
    run_id = f"faults__{date or 'key'}__{time.time_ns()}"
    airflow.trigger(DAG_ID, partition_key=key or partition_key(date), run_id=run_id, conf=conf)
    return run_id


def wait_task(airflow, run_id: str, task_id: str, states: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    ti: dict = {}
    while time.monotonic() < deadline:
        ti = airflow.task_instances(DAG_ID, run_id).get(task_id, {})
        if ti.get("state") in states:
            return ti
        run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{quoted(run_id)}")
        if run["state"] in TERMINAL_RUN and ti.get("state") not in states:
            raise AssertionError(f"run {run_id} ended {run['state']} before {task_id} was {states}: "
                                 f"{task_id} is {ti.get('state')}")
        time.sleep(0.5)
    raise AssertionError(f"{task_id} of {run_id} not in {states} after {timeout:.0f}s (is {ti.get('state')})")


#: The triggerer's first line for a trigger it runs (Airflow's own, shown in the task log).
TRIGGER_STARTED = re.compile(r"^trigger \S+ \(ID \d+\) starting$", re.MULTILINE)


def wait_trigger_started(airflow, run_id: str, task_id: str, timeout: float = 120) -> None:
    """Until the task log shows a triggerer running the deferred task's trigger, as a person sees it in the UI.

    Only a running trigger can act on a kill: Airflow drops a trigger no triggerer has started yet without
    calling its ``on_kill`` (README, Reliability)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try_number = airflow.task_instances(DAG_ID, run_id)[task_id]["try_number"] or 1
        if TRIGGER_STARTED.search(airflow.task_log(DAG_ID, run_id, task_id, try_number)):
            return
        time.sleep(0.5)
    raise AssertionError(f"no triggerer started the trigger of {task_id} in {run_id} within {timeout:.0f} s")


def end_run(airflow, run_id: str) -> None:
    """Stop a run whose outcome the case has seen (as a person would, through the API)."""
    run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{quoted(run_id)}")
    if run["state"] not in TERMINAL_RUN:
        airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{quoted(run_id)}", {"state": "failed"})


def task_log(airflow, run_id: str, task_id: str) -> str:
    ti = airflow.task_instances(DAG_ID, run_id)[task_id]
    return "\n".join(airflow.task_log(DAG_ID, run_id, task_id, n) for n in range(1, (ti["try_number"] or 1) + 1))


def created_since(item, since: float) -> bool:
    created = getattr(getattr(item, "creation_context", None), "created_at", None)
    return created is not None and created.timestamp() >= since - 1


def jobs_of(ml_client, date: str, since: float = 0.0) -> list:
    """The DAG's AML jobs for one partition, created at or after ``since`` (epoch seconds)."""
    return [j for j in ml_client.jobs.list()
            if (j.tags or {}).get("partition") == date and (j.tags or {}).get("dag_id") == DAG_ID
            and created_since(j, since)]


def versions_of(ml_client, date: str, since: float = 0.0) -> list:
    """The model's versions for one partition, registered at or after ``since``."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [m for m in ml_client.models.list(name=MODEL_NAME)
                if (m.tags or {}).get("partition") == date and created_since(m, since)]
    except ResourceNotFoundError:
        return []


def job_route(date: str, method: str = "PUT") -> str:
    """A fault route that matches only one partition's job requests (job names carry the date)."""
    return rf"^{method} .*/jobs/{DAG_ID}-{date}-"


def run_details_route(date: str) -> str:
    """A fault route that matches only the run-history details reads of one partition's jobs."""
    return rf"^GET .*/runs/{DAG_ID}-{date}-[^/]*/details"


def model_version_body(date: str) -> str:
    """A fault ``body`` that matches only model versions tagged with one partition (their path names
    the model and version, not the partition)."""
    return rf'"partition":\s*"{date}"'


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def devstack_up() -> None:
    """Bring back what a case stopped: `python -m devstack up` starts only what is not running."""
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "devstack", "up"], cwd=str(REPO),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"devstack up failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def write_results(stack_env: dict[str, str]) -> dict:
    """Count the totals at their sources and write tests/faults/results.json; returns the document."""
    totals, counted = count_totals(stack_env, BATTERY)
    document = {
        # Which command ran the battery (set by the Makefile), else the pytest command line.
        "command": os.environ.get("EDGE_TEST_COMMAND") or " ".join(["pytest", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.machine()}, Python {platform.python_version()})",
        "cases": [asdict(c) for c in BATTERY.cases],
        "totals": totals,
        "counted": counted,
        "passed": all(c.passed for c in BATTERY.cases) and not any(totals.values()),
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    # Totals of nothing would read as a clean result: cases that trained must be found at the source.
    if BATTERY.dates and not counted["jobs"]:
        raise AssertionError(f"the totals found no AML job for the {len(BATTERY.dates)} partitions the "
                             "battery trained: they would count nothing")
    return document
