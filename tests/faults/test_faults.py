"""Faults injected through Airflow itself and the stack's services, while the DAG runs for real.

Jobs are made to run long with the AML double's ``slow_job`` fault (the job's container works, printing
a line a second, before training), scoped by a route regex to one partition's job names so concurrent
cases do not slow each other.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from edge_training.hooks.azureml_sdk_private import get_run_details
from tests.e2e.support import DAG_ID, MODEL_NAME
from tests.faults.side_by_side import side_by_side
from tests.faults.battery import (
    BATTERY,
    TRAINED_DATE,
    devstack_up,
    end_run,
    fresh_partition,
    job_route,
    jobs_of,
    model_version_body,
    quoted,
    run_details_route,
    task_log,
    trigger,
    versions_of,
    wait_for,
    wait_task,
    wait_trigger_started,
)

KIND = "fault"
CANCEL_BOUND_S = 30


def job_containers(stack_env, job_name: str) -> list[str]:
    import docker

    client = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")
    try:
        return [c.name for c in client.containers.list(all=True, filters={"label": f"azureml.job={job_name}"})]
    finally:
        client.close()


@contextmanager
def slow_runs(airflow, admin, holds: dict[str, int], conf: dict | None = None) -> Iterator[dict[str, str]]:
    """A run of each date (new data) whose job works ``holds[date]`` s longer on the VM; yields
    {date: run_id}. Removes only its own faults, so cases beside it keep theirs."""
    faults = []
    try:
        runs = {}
        for date, hold_s in holds.items():
            fresh_partition(date)
            faults.append(admin.add_fault(job_route(date), "slow_job", delay=hold_s))
            runs[date] = trigger(airflow, date, conf=conf)
        yield runs
    finally:
        for fault in faults:
            admin.remove_fault(fault)


@contextmanager
def deferred_slow_run(airflow, admin, date: str, hold_s: int) -> Iterator[str]:
    """A run of ``date`` whose job works ``hold_s`` s longer, yielded once submit_training is deferred."""
    with slow_runs(airflow, admin, {date: hold_s}) as runs:
        wait_task(airflow, runs[date], "submit_training", {"deferred"}, timeout=300)
        yield runs[date]


def running_job(ml_client, date: str, since: float, timeout: float = 300):
    """The partition's job once the double runs it (its container works on the VM)."""
    def find():
        running = [j for j in jobs_of(ml_client, date, since) if j.status == "Running"]
        return running[0] if running else None
    return wait_for(find, timeout, f"an AML job of {date} Running", interval=1)


def status_of(job) -> str:
    return str(getattr(job.status, "value", job.status))


def statuses_reached(ml_client, acted: dict[str, float], wanted: str, timeout: float) -> dict[str, tuple[str, float]]:
    """For each job (name -> monotonic time of the action), its status and how long until it was ``wanted``."""
    found: dict[str, tuple[str, float]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(found) < len(acted):
        for name, started in acted.items():
            if name not in found:
                status = status_of(ml_client.jobs.get(name))
                if status == wanted:
                    found[name] = (status, time.monotonic() - started)
        time.sleep(0.5)
    for name, started in acted.items():
        found.setdefault(name, (status_of(ml_client.jobs.get(name)), time.monotonic() - started))
    return found


@side_by_side
def test_marking_the_waiting_task_or_its_run_failed_cancels_the_job(airflow, battery, admin, ml_client,
                                                                     stack_env):
    since = time.time()
    dates = {"task": "2026-11-08", "run": "2026-11-09"}
    # Jobs that would work for 10 minutes: only the cancel ends them.
    with slow_runs(airflow, admin, {date: 600 for date in dates.values()}) as by_date:
        runs = {how: by_date[date] for how, date in dates.items()}
        jobs = {}
        for how, run_id in runs.items():
            wait_task(airflow, run_id, "submit_training", {"deferred"}, timeout=300)
            jobs[how] = running_job(ml_client, dates[how], since).name
            wait_trigger_started(airflow, run_id, "submit_training")
        # As the UI does: the task's "Mark as failed", and the run's.
        acted = {}
        airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{quoted(runs['task'])}/taskInstances/submit_training",
                    {"new_state": "failed"})
        acted[jobs["task"]] = time.monotonic()
        airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{quoted(runs['run'])}", {"state": "failed"})
        acted[jobs["run"]] = time.monotonic()
        reached = statuses_reached(ml_client, acted, "Canceled", 60)
        outcomes = {how: reached[jobs[how]] for how in runs}
    for how, (status, seconds) in outcomes.items():
        left = job_containers(stack_env, jobs[how])
        passed = status == "Canceled" and seconds <= CANCEL_BOUND_S and not left
        what = "the deferred submit_training" if how == "task" else "the whole run"
        battery.record(f"{what} marked failed through the REST API", KIND,
                       f"AML job Canceled within {CANCEL_BOUND_S} s by the trigger's on_kill; no container left",
                       f"job {status} after {seconds:.1f} s; containers left: {left or 'none'}", passed)
    assert all(status == "Canceled" and seconds <= CANCEL_BOUND_S for status, seconds in outcomes.values()), outcomes
    assert not any(job_containers(stack_env, name) for name in jobs.values())


@side_by_side
def test_waiting_in_the_worker_mark_failed_cancels_and_a_killed_task_resumes_its_job(airflow, battery, admin,
                                                                                     ml_client, stack_env):
    """The same promises when the run waits in the worker (``wait_in_triggerer`` false): marking the task
    failed kills it and its ``on_kill`` cancels the job; a SIGKILLed task process is retried and the
    retry follows the job it had submitted."""
    since = time.time()
    # The kill first, as soon as its job runs; the job marked failed works long enough to wait for it.
    dates = {"sigkill": "2026-11-25", "mark_failed": "2026-11-24"}
    holds = {"sigkill": 45, "mark_failed": 600}
    in_worker = {"wait_in_triggerer": False}
    with slow_runs(airflow, admin, {dates[how]: holds[how] for how in dates}, conf=in_worker) as by_date:
        runs = {how: by_date[date] for how, date in dates.items()}
        jobs = {}
        for how, run_id in runs.items():
            wait_task(airflow, run_id, "submit_training", {"running"}, timeout=300)
            jobs[how] = running_job(ml_client, dates[how], since).name
            if how == "sigkill":
                os.kill(int(airflow.task_instances(DAG_ID, run_id)["submit_training"]["pid"]), signal.SIGKILL)
        airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{quoted(runs['mark_failed'])}/taskInstances/submit_training",
                    {"new_state": "failed"})
        marked = time.monotonic()
        reached = statuses_reached(ml_client, {jobs["mark_failed"]: marked}, "Canceled", 60)
        status, seconds = reached[jobs["mark_failed"]]
        killed_run = airflow.wait_run(DAG_ID, runs["sigkill"], timeout=900)
    left = job_containers(stack_env, jobs["mark_failed"])
    passed = status == "Canceled" and seconds <= CANCEL_BOUND_S and not left
    battery.record("submit_training waiting in the worker marked failed through the REST API", KIND,
                   f"the task process is killed and its on_kill cancels the AML job within {CANCEL_BOUND_S} s; "
                   "no container left",
                   f"job {status} after {seconds:.1f} s; containers left: {left or 'none'}", passed)
    killed_jobs = jobs_of(ml_client, dates["sigkill"], since)
    ti = airflow.task_instances(DAG_ID, runs["sigkill"])["submit_training"]
    result = airflow.xcom(DAG_ID, runs["sigkill"], "submit_training") if killed_run["state"] == "success" else {}
    resumed = (killed_run["state"] == "success" and [j.name for j in killed_jobs] == [jobs["sigkill"]]
               and ti["try_number"] >= 2 and result.get("job_name") == jobs["sigkill"])
    battery.record("task process SIGKILLed while waiting in the worker", KIND,
                   "the retry follows the same AML job; run completes; one job",
                   f"run {killed_run['state']}; submit_training succeeded on try {ti['try_number']}; "
                   f"jobs {[f'{j.name} {status_of(j)}' for j in killed_jobs]}", resumed)
    assert passed, (status, seconds, left)
    assert resumed, (killed_run["state"], ti, [j.name for j in killed_jobs], jobs["sigkill"], result)


def test_aml_double_restarted_mid_job(alone, airflow, battery, admin, ml_client):
    """The AML service goes away and comes back while the trigger follows a job: it rides the outage out,
    and the double picks its running job up again."""
    from devstack.base import StackContext

    since = time.time()
    date, hold = "2026-11-26", 30
    with deferred_slow_run(airflow, admin, date, hold) as run_id:
        job = running_job(ml_client, date, since).name
        time.sleep(5)
        StackContext().stop("aml-double")
        stopped = time.monotonic()
        time.sleep(5)
        devstack_up()
        outage = time.monotonic() - stopped
        run = airflow.wait_run(DAG_ID, run_id, timeout=900)
    jobs = jobs_of(ml_client, date, since)
    versions = versions_of(ml_client, date, since)
    numbers = log_line_numbers(task_log(airflow, run_id, "submit_training"), job)
    lost = sorted(set(range(1, hold + 1)) - set(numbers))
    repeated = len(numbers) - len(set(numbers))
    BATTERY.count_lost_log_lines(len(lost), repeated)
    passed = run["state"] == "success" and [j.name for j in jobs] == [job] and len(versions) == 1 and not lost
    battery.record("AML double restarted mid-job", KIND,
                   f"run completes; one job, one model version; all {hold} job log lines in the task log",
                   f"run {run['state']} after a {outage:.0f} s outage; "
                   f"jobs {[f'{j.name} {status_of(j)}' for j in jobs]}; "
                   f"versions {len(versions)}; lines lost {len(lost)}, repeated {repeated}", passed)
    assert passed, (run["state"], [j.name for j in jobs], job, [v.version for v in versions], lost, repeated)


@side_by_side
def test_clearing_the_waiting_task_reattaches_to_the_same_job(airflow, battery, admin, ml_client):
    since = time.time()
    date = "2026-11-10"
    with deferred_slow_run(airflow, admin, date, 45) as run_id:
        job = running_job(ml_client, date, since).name
        airflow.api("POST", f"/dags/{DAG_ID}/clearTaskInstances", {
            "dry_run": False, "task_ids": ["submit_training"], "dag_run_id": run_id,
            "only_failed": False, "reset_dag_runs": True, "include_downstream": False})
        run = airflow.wait_run(DAG_ID, run_id, timeout=600)
    jobs = jobs_of(ml_client, date, since)
    result = airflow.xcom(DAG_ID, run_id, "submit_training") if run["state"] == "success" else {}
    passed = run["state"] == "success" and [j.name for j in jobs] == [job] and result.get("job_name") == job
    battery.record("submit_training cleared while its job runs", KIND,
                   "the cleared task re-attaches: one job, run succeeds",
                   f"run {run['state']}; jobs {[f'{j.name} {status_of(j)}' for j in jobs]}", passed)
    assert passed, (run["state"], [j.name for j in jobs], job, result)


@side_by_side
def test_training_script_failure_surfaces_the_jobs_own_error(airflow, battery, ml_client, stack_env):
    """Data the validator cannot see: the right columns, but every row has the same label."""
    since = time.time()
    from tests.e2e.support import stackhub_container

    date = "2026-11-16"
    BATTERY.dates.add(date)
    container = stackhub_container(stack_env)
    prefix = f"telemetry/date={date}/"
    for blob in container.list_blobs(name_starts_with=prefix):
        container.delete_blob(blob.name)
    # New device ids each time: new data, so a new job (not the failed attempts of an earlier battery).
    batch = time.time_ns()
    rows = [f"dev-{batch}-{i},2026-11-16T00:00:00,21.5,0.3,101.2,1500,{i},0" for i in range(200)]
    header = "device_id,timestamp,temperature_c,vibration_mm_s,pressure_kpa,rpm,runtime_hours,failure\n"
    container.upload_blob(prefix + "part-00000.csv", (header + "\n".join(rows)).encode(), overwrite=True)
    container.upload_blob(prefix + "_SUCCESS", b"", overwrite=True)

    run_id = trigger(airflow, date)
    try:
        ti = wait_task(airflow, run_id, "submit_training", {"up_for_retry", "failed"}, timeout=600)
    finally:
        end_run(airflow, run_id)
    log = task_log(airflow, run_id, "submit_training")
    # A job that fails within seconds fires its trigger early; the scheduler must not fail the resumed try
    # on the deferring process's late exit (edge_training.executors.PreloadingLocalExecutor.has_task).
    mismatches = [e.get("extra", "") for e in airflow.api(
        "GET", f"/eventLogs?dag_id={DAG_ID}&run_id={quoted(run_id)}&event=state%20mismatch")["event_logs"]]
    jobs = jobs_of(ml_client, date, since)
    job_error = get_run_details(ml_client, jobs[0].name).error.error.message if jobs else ""
    # The job's own words: the training script's last log lines, carried in the AML error and the task log.
    own_words = "exactly two classes" in job_error
    versions = versions_of(ml_client, date, since)
    # The script's own message reaches the task log (the streamed job log and the exception).
    in_task_log = "AzureMLJobFailedError" in log and "exactly two classes" in log
    passed = (ti["state"] in ("up_for_retry", "failed") and jobs and status_of(jobs[0]) == "Failed" and own_words
              and in_task_log and not versions and not mismatches)
    battery.record("the training script fails on data the validator cannot see", KIND,
                   "task fails with the job's own error in the log and the exception; no model, no image",
                   f"submit_training {ti['state']}; job {status_of(jobs[0]) if jobs else None}; "
                   f"the script's error in the task log: {in_task_log}; "
                   f"model versions {len(versions)}; executor state mismatches {len(mismatches)}", passed)
    assert passed, (ti["state"], mismatches, job_error[-500:], log[-3000:])


@side_by_side
def test_job_timeout_and_execution_timeout_both_cancel_the_job(airflow, battery, admin, ml_client, stack_env):
    since = time.time()
    from tests.conftest import TRAINING_TASK_TIMEOUT_MINUTES

    cases = {
        "job_timeout": ("2026-11-11", {"job_timeout_minutes": 1}, "job timeout"),
        "execution_timeout": ("2026-11-12", None, "execution_timeout"),
    }
    tis: dict[str, dict] = {}
    runs: dict[str, str] = {}
    try:
        with ExitStack() as faults:  # in place until both first tries end (a retry is never started)
            for name, (date, conf, _) in cases.items():
                runs[name] = faults.enter_context(slow_runs(airflow, admin, {date: 600}, conf=conf))[date]

            def first_try_ended():
                for name, run_id in runs.items():
                    ti = airflow.task_instances(DAG_ID, run_id)["submit_training"]
                    if name not in tis and ti["state"] in ("up_for_retry", "failed"):
                        tis[name] = ti
                        end_run(airflow, run_id)  # the case is the first try; no retry needed
                return len(tis) == len(runs)
            wait_for(first_try_ended, 900, "both timed-out tries to end", interval=1)
    finally:
        for run_id in runs.values():
            end_run(airflow, run_id)
    for name, (date, _, says) in cases.items():
        jobs = jobs_of(ml_client, date, since)
        log = task_log(airflow, runs[name], "submit_training")
        left = [c for j in jobs for c in job_containers(stack_env, j.name)]
        statuses = [status_of(j) for j in jobs]
        limit = "1 min" if name == "job_timeout" else f"{TRAINING_TASK_TIMEOUT_MINUTES} min"
        passed = statuses == ["Canceled"] and says in log and not left
        battery.record(f"job outlives its {name} ({limit}) while deferred", KIND,
                       "the trigger cancels the AML job at the deadline; the task fails naming the limit",
                       f"submit_training {tis[name]['state']}; jobs {statuses}; log names {says!r}: "
                       f"{says in log}; containers left: {left or 'none'}", passed)
        assert passed, (name, statuses, left, log[-3000:])


def log_line_numbers(log: str, job: str) -> list[int]:
    return [int(m) for m in re.findall(rf"\[{re.escape(job)}\] edge-fault: slow job, second (\d+) of", log)]


@pytest.fixture(scope="module")
def airflow_components_killed(side_by_side_group, airflow, admin) -> dict:
    """Two runs with their jobs working on the VM, then the triggerer SIGKILLed mid-wait and, 5 s later, the
    scheduler SIGKILLed mid-run, and both restarted. The two cases below share this one crash (each run
    rides out both kills), so the battery pays for one wait instead of two."""
    from edge_training.hooks.azureml import AzureMLHook

    side_by_side_group.finish()  # alone: the side-by-side cases must not see these crashes
    hook = AzureMLHook(azureml_conn_id="azureml_default")  # its own: the per-test ml_client is too short-lived
    try:
        return _kill_components_mid_run(airflow, admin, hook.get_conn())
    finally:
        hook.close()


def _kill_components_mid_run(airflow, admin, ml_client) -> dict:
    since = time.time()
    dates = {"triggerer": "2026-11-13", "scheduler": "2026-11-14"}
    with slow_runs(airflow, admin, {date: LOGGED_HOLD_S for date in dates.values()}) as runs:
        for run_id in runs.values():
            wait_task(airflow, run_id, "submit_training", {"deferred"}, timeout=300)
        logged_job = running_job(ml_client, dates["triggerer"], since).name
        time.sleep(8)  # some lines shown (and their offset stored) before the crash
        airflow.kill("triggerer")
        time.sleep(5)
        airflow.kill("scheduler")
        time.sleep(5)
        airflow.start()  # starts what is not running
        finished = {date: airflow.wait_run(DAG_ID, run_id, timeout=900) for date, run_id in runs.items()}
    return {"since": since, "dates": dates, "runs": runs, "finished": finished, "logged_job": logged_job}


#: How long the killed-component cases' jobs work on the VM: one log line a second.
LOGGED_HOLD_S = 30


def test_triggerer_killed_mid_wait_loses_and_repeats_no_log_line(airflow_components_killed, airflow, battery,
                                                                 ml_client):
    killed = airflow_components_killed
    date = killed["dates"]["triggerer"]
    run_id, run = killed["runs"][date], killed["finished"][date]
    numbers = log_line_numbers(task_log(airflow, run_id, "submit_training"), killed["logged_job"])
    lost = sorted(set(range(1, LOGGED_HOLD_S + 1)) - set(numbers))
    repeated = len(numbers) - len(set(numbers))
    BATTERY.count_lost_log_lines(len(lost), repeated)
    jobs = jobs_of(ml_client, date, killed["since"])
    passed = run["state"] == "success" and len(jobs) == 1 and not lost and not repeated
    battery.record("triggerer SIGKILLed mid-wait, then restarted", KIND,
                   f"run completes; one job; all {LOGGED_HOLD_S} job log lines in the task log once",
                   f"run {run['state']}; jobs {len(jobs)}; lines lost {len(lost)}, repeated {repeated}", passed)
    assert passed, (run["state"], [j.name for j in jobs], lost, repeated)


def test_scheduler_killed_mid_run_then_restarted(airflow_components_killed, battery, ml_client):
    killed = airflow_components_killed
    date = killed["dates"]["scheduler"]
    run = killed["finished"][date]
    jobs = jobs_of(ml_client, date, killed["since"])
    versions = versions_of(ml_client, date, killed["since"])
    passed = run["state"] == "success" and len(jobs) == 1 and len(versions) == 1
    battery.record("scheduler SIGKILLed mid-run, then restarted", KIND, "run completes; one job; one model version",
                   f"run {run['state']}; jobs {len(jobs)}; model versions {len(versions)}", passed)
    assert passed, (run["state"], [j.name for j in jobs], [v.version for v in versions])


def test_a_task_marked_failed_while_no_triggerer_runs_still_cancels_its_job(alone, airflow, battery, admin,
                                                                           ml_client, stack_env):
    """The triggerer down (a crash, a restart) while the task defers and a person marks it failed: no trigger
    hears of the kill, so the run's failure callback (edge_training.run_cleanup) cancels the job instead."""
    since = time.time()
    date = "2026-11-05"
    airflow.kill("triggerer")
    try:
        with slow_runs(airflow, admin, {date: 600}) as runs:
            run_id = runs[date]
            wait_task(airflow, run_id, "submit_training", {"deferred"}, timeout=300)
            job = running_job(ml_client, date, since).name
            airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{quoted(run_id)}/taskInstances/submit_training",
                        {"new_state": "failed"})
            status, seconds = statuses_reached(ml_client, {job: time.monotonic()}, "Canceled", 60)[job]
            run = airflow.wait_run(DAG_ID, run_id, timeout=120)
    finally:
        airflow.start()  # starts what is not running: the triggerer
    left = job_containers(stack_env, job)
    passed = run["state"] == "failed" and status == "Canceled" and seconds <= CANCEL_BOUND_S and not left
    battery.record("the deferred submit_training marked failed while no triggerer runs", KIND,
                   f"the run fails and its failure callback cancels the AML job within {CANCEL_BOUND_S} s; "
                   "no container left",
                   f"run {run['state']}; job {status} after {seconds:.1f} s; containers left: {left or 'none'}",
                   passed)
    assert passed, (run["state"], status, seconds, left)


@side_by_side
def test_aml_throttling_errors_and_slow_answers_are_ridden_out(airflow, battery, admin, ml_client, registry):
    """Every fault is scoped to this partition's requests, so the cases beside it see none."""
    since = time.time()
    date = "2026-11-15"
    fresh_partition(date)
    faults = [
        admin.add_fault(job_route(date), "503", count=2, retry_after=1),                    # submit
        admin.add_fault(job_route(date, "GET"), "429", share=0.5, count=6, retry_after=2),  # wait
        admin.add_fault(run_details_route(date), "delay", share=0.5, count=10, delay=3),    # wait, gate
        admin.add_fault("PUT model version", "503", count=2, retry_after=1,                 # register
                        body=model_version_body(date)),
    ]
    try:
        run_id = trigger(airflow, date)
        run = airflow.wait_run(DAG_ID, run_id, timeout=900)
    finally:
        for fault in faults:
            admin.remove_fault(fault)
    # Only this case's faults strike these requests: its job names, and model versions (only its
    # fault injects on that route, scoped by the partition tag in the body).
    injected = Counter(r["route"] for r in admin.requests()["recent"]
                       if r.get("injected") and r["time"] >= since
                       and (f"/{DAG_ID}-{date}-" in r["path"] or r["route"] == "PUT model version"))
    jobs = jobs_of(ml_client, date, since)
    versions = versions_of(ml_client, date, since)
    tags = [t for t in registry.tags(MODEL_NAME) if t in {v.version for v in versions}]
    passed = run["state"] == "success" and len(jobs) == 1 and len(versions) == 1 and len(tags) == 1 \
        and injected["PUT job"] == 2 and injected["PUT model version"] == 2
    battery.record("AML double: 429 with Retry-After, 503 bursts, slow answers in submit, wait, register", KIND,
                   "run completes; one job, one model version, one image",
                   f"run {run['state']}; errors served {dict(sorted(injected.items()))}; jobs {len(jobs)}; "
                   f"versions {len(versions)}; images {len(tags)}", passed)
    assert passed, (run["state"], injected, [j.name for j in jobs], [v.version for v in versions], tags)


def test_stack_hub_stopped_during_validation_then_started(alone, airflow, battery, stack_env):
    from devstack.base import StackContext
    from tests.e2e.support import stackhub_container

    date = fresh_partition("2026-11-18")
    run_id = trigger(airflow, date)
    wait_task(airflow, run_id, "check_edge_vm", {"success"}, timeout=300)
    StackContext().stop("azurite-stackhub")
    stopped = time.monotonic()
    try:
        time.sleep(15)  # validate_partition meets a Stack Hub that does not answer
        ti_during = airflow.task_instances(DAG_ID, run_id)["validate_partition"]
    finally:
        devstack_up()
    outage = time.monotonic() - stopped
    run = airflow.wait_run(DAG_ID, run_id, timeout=900)
    ti = airflow.task_instances(DAG_ID, run_id)["validate_partition"]
    summary = airflow.xcom(DAG_ID, run_id, "validate_partition") if ti["state"] == "success" else {}
    container = stackhub_container(stack_env)
    manifest = json.loads(container.download_blob(f"telemetry/date={date}/_manifest.json").readall()) \
        if summary else {}
    prefix = f"telemetry/date={date}/"
    parts = [b.name[len(prefix):] for b in container.list_blobs(name_starts_with=prefix) if b.name.endswith(".csv")]
    complete = manifest.get("fingerprint", {}).get("value") == summary.get("fingerprint") and \
        sorted(f["name"] for f in manifest.get("files", [])) == sorted(parts) and manifest["file_count"] == len(parts)
    passed = run["state"] == "success" and complete
    battery.record("Stack Hub (Azurite) stopped during validation, then started", KIND,
                   "bounded retries, then success; the manifest lists every part (none partial)",
                   f"validate_partition {ti_during['state']} during a {outage:.0f} s outage, then {ti['state']} "
                   f"after {ti['try_number']} tries; run {run['state']}; manifest complete: {complete}", passed)
    assert passed, (run["state"], ti, manifest.get("files", [])[:3], parts[:3])


def test_registry_down_during_push_then_up(alone, airflow, battery, registry):
    from devstack.base import StackContext

    date = fresh_partition("2026-11-27")
    run_id = trigger(airflow, date)
    wait_task(airflow, run_id, "build_image", {"success"}, timeout=900)
    StackContext().stop("registry")
    try:
        ti_down = wait_task(airflow, run_id, "push_image", {"up_for_retry", "failed"}, timeout=300)
    finally:
        devstack_up()
    run = airflow.wait_run(DAG_ID, run_id, timeout=900)
    pushed = airflow.xcom(DAG_ID, run_id, "push_image") if run["state"] == "success" else {}
    version = (airflow.xcom(DAG_ID, run_id, "register_model") or {}).get("version")
    digest = (pushed.get("image") or "@").split("@")[-1]
    tags = registry.tags(MODEL_NAME)
    fp_tag = f"fp-{(airflow.xcom(DAG_ID, run_id, 'validate_partition') or {}).get('fingerprint', '')[:12]}"
    ours = {t: registry.digest(MODEL_NAME, t) for t in tags if t in (version, fp_tag)}
    passed = run["state"] == "success" and bool(digest) and set(ours.values()) == {digest} and len(ours) == 2
    battery.record("registry down during push, then up", KIND,
                   "the retry pushes; the registry's digest is the pushed one; no dangling tag",
                   f"push_image {ti_down['state']} while down, run {run['state']}; tags {sorted(ours)} -> "
                   f"{sorted({d[:19] for d in ours.values()})}; pushed {digest[:19]}", passed)
    assert passed, (run["state"], pushed, ours)


def test_edge_vm_sshd_down_fails_readiness_naming_the_check(alone, airflow, battery, admin):
    from devstack.base import StackContext

    date = TRAINED_DATE
    puts = admin.requests()["counts"].get("PUT job", 0)
    StackContext().stop("edge-vm-sshd")
    try:
        run_id = trigger(airflow, date)
        ti = wait_task(airflow, run_id, "check_edge_vm", {"up_for_retry", "failed"}, timeout=300)
        end_run(airflow, run_id)
    finally:
        devstack_up()
    log = task_log(airflow, run_id, "check_edge_vm")
    submitted = admin.requests()["counts"].get("PUT job", 0) - puts
    names_check = "reachable" in log and "edgevm.local.azurestack.external" in log
    passed = names_check and submitted == 0
    errors = [line for line in log.splitlines() if "Error" in line][-1:]
    battery.record("edge VM sshd down", KIND, "check_edge_vm fails naming the check and the host; no AML job",
                   f"check_edge_vm {ti['state']}; AML job submissions {submitted}; "
                   f"error: {(errors[0] if errors else 'none')[:150]}", passed)
    assert passed, (submitted, log[-2000:])


def dockerd_pid() -> int:
    from devstack.base import StackContext

    pid = StackContext().running_pid("dockerd")
    if pid is None:  # an engine the stack found running and does not own
        found = subprocess.run(["pgrep", "-xo", "dockerd"], capture_output=True, text=True).stdout.split()
        pid = int(found[0]) if found else None
    assert pid, "no dockerd process found to freeze"
    return pid


def test_docker_not_answering_on_the_vm_fails_readiness_naming_the_check(alone, airflow, battery, admin):
    """dockerd frozen (SIGSTOP): its socket accepts connections but nothing answers, as a hung daemon does."""
    date = TRAINED_DATE
    puts = admin.requests()["counts"].get("PUT job", 0)
    pid = dockerd_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        run_id = trigger(airflow, date)
        ti = wait_task(airflow, run_id, "check_edge_vm", {"up_for_retry", "failed"}, timeout=300)
    finally:
        os.kill(pid, signal.SIGCONT)
    end_run(airflow, run_id)
    log = task_log(airflow, run_id, "check_edge_vm")
    submitted = admin.requests()["counts"].get("PUT job", 0) - puts
    names_check = "docker_daemon" in log and "did not answer: timed out" in log
    passed = names_check and submitted == 0
    said = next((line.strip() for line in log.splitlines() if "did not answer" in line), "none")
    battery.record("Docker not answering on the edge VM", KIND,
                   "check_edge_vm fails naming the docker_daemon check and the timeout; no AML job",
                   f"check_edge_vm {ti['state']}; AML job submissions {submitted}; says: {said[:150]}", passed)
    assert passed, (submitted, log[-2000:])


@side_by_side
def test_manual_run_beside_a_backfill_of_the_same_day(airflow, battery, ml_client, registry):
    since = time.time()
    from tests.e2e.support import (
        backfill_runs,
        partition_key,
        wait_backfill,
        wait_backfills_closed,
    )

    days = [fresh_partition("2026-11-28"), fresh_partition("2026-11-29")]
    wait_backfills_closed(airflow)
    airflow.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", days[0], "--to-date", days[-1])
    wait_for(lambda: backfill_runs(airflow, {partition_key(days[0])}), 120, "the backfill's run of the day")
    manual = trigger(airflow, days[0])
    runs = wait_backfill(airflow, {partition_key(d) for d in days})
    manual_run = airflow.wait_run(DAG_ID, manual, timeout=900)
    wait_backfills_closed(airflow)
    jobs = [j for j in jobs_of(ml_client, days[0], since) if status_of(j) == "Completed"]
    versions = versions_of(ml_client, days[0], since)
    images = [t for t in registry.tags(MODEL_NAME) if t in {v.version for v in versions}]
    states = [runs[partition_key(days[0])]["state"], manual_run["state"]]
    passed = states == ["success", "success"] and len(jobs) == 1 and len(versions) == 1 and len(images) == 1
    battery.record("a manual run of a day beside a backfill that includes it", KIND,
                   "both runs succeed; one job, one model version, one image for the day",
                   f"runs {states}; jobs {len(jobs)}; versions {len(versions)}; images {len(images)}", passed)
    assert passed, (states, [j.name for j in jobs], [v.version for v in versions], images)
