"""backfill: N partitions through the edge_vm pool at k = 1 and k = 2, against the floor the pool allows.

On the running stack (`make stack-up`), a LocalAirflow of its own (LocalExecutor + the stack's Postgres,
fresh metadata database, api-server on port 47195) runs the edge_training DAG unchanged. Every training
takes a fixed T on the VM: the runs get ``min_training_seconds`` = T (train.py --min-seconds), so each job
really runs that long in its container on the edge VM. Every run also gets ``gate_tolerance`` 1 (the gate
passes: each run registers its model and builds and pushes its image, the DAG's full work) and its own
model name. Partitions are fresh (new rows under dates no other phase of the run uses, seeded as
devstack/seed.py does), so no AML job is reused; the script fails if one was.

1. For k = 1, then k = 2: the edge_vm pool set to k slots, deferred tasks included (as LocalAirflow
   creates it); a backfill of N partitions through the REST API (POST /api/v2/backfills,
   max_active_runs = N, the DAG's max_active_runs N too, so neither is the bound). Makespan: from the
   POST to the last run's end. Floor: ceil(N / k) x T + W.
   Meanwhile, every 0.5 s: the AML double's jobs in flight and the VM's job containers
   (tests/e2e/support.py's VMLoadSampler), and the executor: the LocalExecutor's busy worker processes
   (their process titles name the task instance) and the task instances in state running / deferred
   (REST API).
2. One run's serial non-training work W, last (on a warm Airflow and VM, so no cold start inflates the
   floor): a backfill of one partition, its makespan minus its job's training time (the job's
   run-history start to end, what the DAG reports as the training's duration).

Targets, for each k: makespan <= 1.15 x floor; no worker slot held by a training while its AML job runs
(a submit_training task instance on a LocalExecutor worker, or in state running, at a sample inside
its job's run-history start..end); never more than k jobs on the VM at once (jobs in flight and job
containers). Writes its result file, backfill.json in bench/results/ (bench/results.py's write_result).
A full run with the defaults holds the stack for about 25 minutes.

    .venv/bin/python bench/backfill.py [--seconds 60] [--partitions 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

from results import Check, load_stack_env, write_result

DAG_ID = "edge_training"
SLOTS = (1, 2)
TARGET_RATIO = 1.15
FIRST_DATE = dt.date(2026, 11, 2)  # the day after the DAG's start_date
AIRFLOW_NAME = "airflow-bench-backfill"
AIRFLOW_PORT = 47195
DATABASE = "airflow_bench_backfill"
MODEL_NAME = "bench-backfill"
SAMPLE_EVERY_S = 0.5
WORKER_TITLE = "airflow worker -- LocalExecutor:"


class Sampler(threading.Thread):
    """Calls ``probe`` every half second until stopped; keeps (time, result), and the errors."""

    def __init__(self, probe) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.samples: list[tuple[float, object]] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                t = time.time()
                self.samples.append((t, self.probe()))
            except Exception as exc:  # noqa: BLE001 - a missed sample is reported, not fatal
                self.errors.append(repr(exc))
            self._stop_event.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def busy_workers(scheduler_pid: int) -> list[str]:
    """Task instance ids the scheduler's LocalExecutor workers (its children) are running now, from their
    process titles. A task process forked by a worker has its worker's title until it sets its own: it is
    not a child of the scheduler."""
    busy = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            title = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent != scheduler_pid or not title.startswith(WORKER_TITLE):
            continue
        current = title[len(WORKER_TITLE):].strip()
        if current and current != "<idle>":
            busy.add(current)
    return sorted(busy)


def running_or_deferred(airflow) -> list[tuple[str, str, str, str]]:
    """(id, task_id, dag_run_id, state) of the DAG's task instances in state running or deferred."""
    tis = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/~/taskInstances?state=running&state=deferred&limit=100")
    return [(ti["id"], ti["task_id"], ti["dag_run_id"], ti["state"]) for ti in tis["task_instances"]]


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def all_task_instances(airflow) -> dict[str, dict]:
    """Every task instance of the DAG, by id."""
    found: dict[str, dict] = {}
    offset = 0
    while True:
        page = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/~/taskInstances?limit=100&offset={offset}")
        for ti in page["task_instances"]:
            found[ti["id"]] = ti
        offset += len(page["task_instances"])
        if not page["task_instances"] or offset >= page["total_entries"]:
            return found


def set_pool(airflow, slots: int) -> None:
    from edge_training.pool_order import EDGE_VM_POOL

    airflow.set_edge_vm_slots(slots)  # a deferred training still runs on the VM, so it keeps its slot
    pool = {p["name"]: p for p in airflow.api("GET", "/pools")["pools"]}[EDGE_VM_POOL]
    if (pool["slots"], pool["include_deferred"]) != (slots, True):
        raise SystemExit(f"edge_vm pool is {pool}, expected {slots} slots counting deferred tasks")


def backfill(airflow, admin, hook, env: dict, dates: list[str], conf: dict, *, sample: bool,
             timeout: float) -> dict:
    """Seed fresh data for ``dates``, backfill them through the REST API, wait; the runs, their jobs
    and (``sample``) what the samplers saw, times relative to the POST."""
    from devstack.demo import partition_key
    from devstack.seed import seed_partition
    from tests.e2e.support import VMLoadSampler, wait_backfill, wait_backfills_closed

    for date in dates:
        seed_partition(date, rows=1500 + random.randrange(3000))
    wait_backfills_closed(airflow)
    if admin.jobs_in_flight():
        raise SystemExit("the AML double already has a job in flight: the VM is not the benchmark's alone")
    keys = {partition_key(d) for d in dates}
    samplers = {}
    if sample:
        scheduler_pid = airflow.ctx.running_pid(f"{airflow.name}-scheduler")
        samplers = {"vm": VMLoadSampler(admin, env["EDGE_DOCKER_HOST"]),
                    "workers": Sampler(lambda: busy_workers(scheduler_pid)),
                    "rest": Sampler(lambda: running_or_deferred(airflow))}
        for sampler in samplers.values():
            sampler.start()
    try:
        posted = time.time()
        airflow.api("POST", "/backfills", {
            "dag_id": DAG_ID, "from_date": f"{dates[0]}T00:00:00Z", "to_date": f"{dates[-1]}T00:00:00Z",
            "max_active_runs": len(dates), "dag_run_conf": conf,
        })
        runs = wait_backfill(airflow, keys, timeout=timeout)
    finally:
        for sampler in samplers.values():
            sampler.stop()
    failed = {k: r["state"] for k, r in runs.items() if r["state"] != "success"}
    if failed or set(runs) != keys:
        raise SystemExit(f"backfill of {dates[0]}..{dates[-1]}: runs not all successful: {failed or runs}")
    by_run_id = {r["dag_run_id"]: k[:10] for k, r in runs.items()}
    rows = []
    for key, run in sorted(runs.items()):
        job = airflow.xcom(DAG_ID, run["dag_run_id"], "submit_training")
        info = hook.get_run_info(job["job_name"])  # run history: the command's start, the job's end
        row = {
            "partition": key[:10], "job": job["job_name"],
            "run_start_s": parse_time(run["start_date"]) - posted, "run_end_s": parse_time(run["end_date"]) - posted,
            "job_start_s": parse_time(info.started_at) - posted, "job_end_s": parse_time(info.ended_at) - posted,
            "status": airflow.xcom(DAG_ID, run["dag_run_id"], "summary")["status"],
        }
        row["job_s"] = row["job_end_s"] - row["job_start_s"]
        if row["job_start_s"] < 0:
            raise SystemExit(f"run of {row['partition']} reused AML job {row['job']} (started before the "
                             "backfill): the partition's data was not fresh")
        if row["job_s"] < conf["min_training_seconds"]:
            raise SystemExit(f"job {row['job']} ran {row['job_s']:.1f} s, less than T = "
                             f"{conf['min_training_seconds']} s: min_training_seconds did not reach it")
        rows.append(row)
    result = {"dates": [dates[0], dates[-1]], "posted": posted, "runs": rows,
              "makespan_s": max(r["run_end_s"] for r in rows)}
    if sample:
        result.update(samplers, by_run_id=by_run_id)
    return result


def executor_series(workers: Sampler, rest: Sampler, tis: dict[str, tuple[str, str]], by_run_id: dict[str, str],
                    jobs: dict[str, tuple[float, float]], posted: float) -> tuple[list[dict], list[dict]]:
    """Per sample of the workers and of the REST API: the trainings (submit_training task instances)
    holding a LocalExecutor worker, or in state running, at a time inside their own job's start..end;
    and the executor's load. ``tis``: task instance id -> (task_id, dag_run_id)."""
    def inside(run_id: str, t: float) -> bool:
        window = jobs.get(by_run_id.get(run_id, ""))
        return window is not None and window[0] <= t <= window[1]

    def jobs_running(t: float) -> int:
        return sum(1 for start, end in jobs.values() if start <= t <= end)

    worker_series = []
    for t, ids in workers.samples:
        t -= posted
        known = [tis[i] for i in ids if i in tis]
        worker_series.append({
            "t": round(t, 2), "jobs_running": jobs_running(t), "workers_busy": len(ids),
            "workers_unknown": len(ids) - len(known),
            "workers_on_training": sum(1 for task, _ in known if task == "submit_training"),
            "workers_held": sum(1 for task, run_id in known if task == "submit_training" and inside(run_id, t)),
        })
    rest_series = []
    for t, rows in rest.samples:
        t -= posted
        trainings = [(run_id, state) for _, task, run_id, state in rows if task == "submit_training"]
        rest_series.append({
            "t": round(t, 2), "jobs_running": jobs_running(t),
            "tis_running": sum(1 for *_, state in rows if state == "running"),
            "training_running": sum(1 for _, state in trainings if state == "running"),
            "training_deferred": sum(1 for _, state in trainings if state == "deferred"),
            "running_held": sum(1 for run_id, state in trainings if state == "running" and inside(run_id, t)),
        })
    return worker_series, rest_series


def changes(series: list[dict], keep: str = "t") -> list[list]:
    """The samples where something other than ``keep`` changed (and the last): the series, compactly."""
    fields = [k for k in series[0] if k != keep] if series else []
    out, last = [], None
    for i, s in enumerate(series):
        values = [s[k] for k in fields]
        if values != last or i == len(series) - 1:
            out.append([s[keep], *values])
            last = values
    return [[keep, *fields], *out]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="T: how long each training runs on the VM")
    parser.add_argument("--partitions", type=int, default=10, help="N: partitions per backfill")
    args = parser.parse_args()
    n, seconds = args.partitions, args.seconds
    if n < 1 or seconds < 1:
        parser.error("--seconds and --partitions must be at least 1")
    needed = n * len(SLOTS) + 1
    dates = [(FIRST_DATE + dt.timedelta(days=i)).isoformat() for i in range(needed)]
    if dt.date.fromisoformat(dates[-1]) >= dt.datetime.now(dt.timezone.utc).date():
        parser.error(f"{needed} partitions from {FIRST_DATE} reach today: fewer --partitions")
    env = load_stack_env()

    from devstack import scale
    from devstack.airflow_local import LocalAirflow
    from devstack.aml.admin import AmlDoubleAdmin
    from edge_training.hooks.azureml import AzureMLHook

    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs' per-request lines

    conf = {"min_training_seconds": seconds, "gate_tolerance": 1.0, "model_name": MODEL_NAME}
    admin = AmlDoubleAdmin.from_env(env)
    started = scale.up(redis=False)
    airflow = LocalAirflow(name=AIRFLOW_NAME, port=AIRFLOW_PORT, sql_alchemy_conn=scale.database(DATABASE),
                           extra_env={"EDGE_TRAINING_MAX_ACTIVE_RUNS": str(n)}, edge_vm_slots=SLOTS[0])
    hook = AzureMLHook(azureml_conn_id="azureml_default")
    try:
        airflow.reset()  # a fresh metadata database: no earlier run changes what a backfill creates
        airflow.start()
        airflow.wait_dag_parsed(DAG_ID)
        one_run_timeout = 1200 + 2 * seconds

        phases = {}
        for i, k in enumerate(SLOTS):
            set_pool(airflow, k)
            chunk = dates[i * n: (i + 1) * n]
            print(f"k = {k}: a backfill of {n} partitions, {chunk[0]}..{chunk[-1]} (T = {seconds} s)", flush=True)
            phases[k] = backfill(airflow, admin, hook, env, chunk, conf, sample=True,
                                 timeout=one_run_timeout + 2 * math.ceil(n / k) * seconds + 600)
            print(f"k = {k}: makespan {phases[k]['makespan_s']:.1f} s", flush=True)
        # Last, on a warm Airflow and VM: a cold start would inflate W, and with it the floor.
        print(f"W: a backfill of one partition, {dates[-1]}", flush=True)
        calibration = backfill(airflow, admin, hook, env, dates[-1:], conf, sample=False, timeout=one_run_timeout)
        tis = all_task_instances(airflow)
    finally:
        hook.close()
        airflow.stop()
        scale.down(only=started)

    checks, details, samples = evaluate(phases, calibration, tis, n, seconds)
    document = write_result("backfill", checks, samples, details=details)
    return 0 if document["ok"] else 1


def evaluate(phases: dict[int, dict], calibration: dict, tis: dict[str, dict], n: int,
             seconds: int) -> tuple[list[Check], dict, dict]:
    """The checks, details and samples of the result file, from what the backfills recorded."""
    w = calibration["makespan_s"] - calibration["runs"][0]["job_s"]
    checks, details, samples = [], {
        "T, the training's time on the VM (s)": seconds, "partitions per backfill": n,
        "W, one run's serial non-training work: a one-partition backfill's makespan, its job's time (s)": [
            round(calibration["makespan_s"], 1), round(calibration["runs"][0]["job_s"], 1)],
    }, {"W": {"dates": calibration["dates"], "makespan_s": round(calibration["makespan_s"], 2),
              "runs": calibration["runs"]}}
    for k, phase in phases.items():
        floor = math.ceil(n / k) * seconds + w
        jobs = {r["partition"]: (r["job_start_s"], r["job_end_s"]) for r in phase["runs"]}
        # A task instance's id changes with each try: the ids seen while sampling, and the final ones.
        ids_map = {i: (ti["task_id"], ti["dag_run_id"]) for i, ti in tis.items()}
        ids_map.update({i: (task, run_id) for _, rows in phase["rest"].samples for i, task, run_id, _ in rows})
        workers, rest = executor_series(phase["workers"], phase["rest"], ids_map, phase["by_run_id"], jobs,
                                        phase["posted"])
        vm = [(round(t - phase["posted"], 2), j, c) for t, j, c in phase["vm"].samples]
        errors = phase["vm"].errors + phase["workers"].errors + phase["rest"].errors
        if min(len(vm), len(workers), len(rest)) < 10:
            raise SystemExit(f"k={k}: too few samples (VM {len(vm)}, workers {len(workers)}, REST {len(rest)}); "
                             f"errors: {errors[:3]}")
        peak_jobs, peak_containers = max(s[1] for s in vm), max(s[2] for s in vm)
        held = max(max(s["workers_held"] for s in workers), max(s["running_held"] for s in rest))
        workers_during = [s for s in workers if s["jobs_running"]]
        rest_during = [s for s in rest if s["jobs_running"]]

        def mean(rows: list[dict], key: str) -> float:
            return round(sum(r[key] for r in rows) / max(len(rows), 1), 2)

        checks += [
            Check(f"k={k}: makespan of {n} partitions / floor ({math.ceil(n / k)} x {seconds} s + W {w:.0f} s)",
                  phase["makespan_s"] / floor, TARGET_RATIO, "x"),
            Check(f"k={k}: worker slots held by a training while its own AML job ran, most at once", held, 0,
                  "slots"),
            Check(f"k={k}: jobs on the VM at once, most (AML double in flight, VM job containers)",
                  max(peak_jobs, peak_containers), k, "jobs"),
        ]
        details[f"k={k}: makespan, floor (s)"] = [round(phase["makespan_s"], 1), round(floor, 1)]
        details[f"k={k}: most jobs in flight, job containers"] = [peak_jobs, peak_containers]
        details[f"k={k}: while jobs ran, trainings deferred, running (REST, mean of samples)"] = [
            mean(rest_during, "training_deferred"), mean(rest_during, "training_running")]
        details[f"k={k}: while jobs ran, busy LocalExecutor workers (mean, most), on a training (most)"] = [
            mean(workers_during, "workers_busy"), max((s["workers_busy"] for s in workers_during), default=0),
            max((s["workers_on_training"] for s in workers_during), default=0)]
        # How long after its job's command started a training still had its worker (the hand-off to the
        # triggerer: submit, check once, defer, the worker's supervisor finishing).
        overlap = {}
        for t, ids in phase["workers"].samples:
            t -= phase["posted"]
            for i in ids:
                task, run_id = ids_map.get(i, (None, None))
                part = phase["by_run_id"].get(run_id)
                if task == "submit_training" and part in jobs and jobs[part][0] <= t <= jobs[part][1]:
                    overlap[part] = max(overlap.get(part, 0.0), t - jobs[part][0])
        details[f"k={k}: jobs whose training still had its worker after the job started, of {n}; "
                "longest such time after the start (s)"] = [len(overlap), round(max(overlap.values(), default=0), 1)]
        details[f"k={k}: busy workers on a task instance the REST API never listed, most"] = max(
            s["workers_unknown"] for s in workers)
        # Where a slot's time goes between two trainings: a job's end to the next job's start on the slot
        # it freed (the trigger noticing the end; the next training scheduled, started, submitting; its
        # job prepared). And a job's end to its own task's end (noticing, then resuming, which takes a
        # pool slot again).
        by_start = sorted(phase["runs"], key=lambda r: r["job_start_s"])
        job_ends = sorted(r["job_end_s"] for r in by_start)
        handoff = [r["job_start_s"] - job_ends[i] for i, r in enumerate(by_start[k:])]
        ends = {phase["by_run_id"][ti["dag_run_id"]]: parse_time(ti["end_date"]) - phase["posted"]
                for ti in tis.values() if ti["task_id"] == "submit_training" and ti["dag_run_id"] in phase["by_run_id"]
                and ti.get("end_date")}
        finish = [ends[r["partition"]] - r["job_end_s"] for r in by_start if r["partition"] in ends]
        details[f"k={k}: a job's end to the next job's start on the slot it freed, median/max (s)"] = [
            round(statistics.median(handoff), 1), round(max(handoff), 1)] if handoff else None
        details[f"k={k}: a job's end to its training task's end, median/max (s)"] = [
            round(statistics.median(finish), 1), round(max(finish), 1)] if finish else None
        details[f"k={k}: job times on the VM, min/max (s)"] = [round(min(r["job_s"] for r in phase["runs"]), 1),
                                                               round(max(r["job_s"] for r in phase["runs"]), 1)]
        details[f"k={k}: samples (VM, workers, REST), sampler errors"] = [len(vm), len(workers), len(rest),
                                                                         len(errors)]
        samples[f"k={k}"] = {
            "dates": phase["dates"], "makespan_s": round(phase["makespan_s"], 2), "floor_s": round(floor, 2),
            "runs": phase["runs"],
            "vm_changes": changes([{"t": t, "jobs_in_flight": j, "containers": c} for t, j, c in vm]),
            "worker_changes": changes(workers),
            "rest_changes": changes(rest),
            "sampler_errors": errors[:20],
        }
    return checks, details, samples


if __name__ == "__main__":
    sys.exit(main())
