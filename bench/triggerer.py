"""triggerer: 500 concurrent deferred waits on one real Airflow triggerer against the AML double.

Against the running stack (`make stack-up`):

- a private AML double (own port and state) in host job mode (``--job-mode host``, devstack/aml/host_jobs.py): each
  job is a real ``sleep`` process on the edge VM, started and watched over one SSH connection, so 500 can run at
  once on a 2-core machine (a container per job, the default mode, could not);
- 500 jobs submitted through the project's AzureMLHook (azure-ai-ml), each ``echo started; sleep N; echo finished``
  with N chosen so that the jobs end spread over ``--spread-minutes``, the first ``--base-minutes`` after the
  submits (enough for every task to defer first, and for each wait to be quiet a while);
- an Airflow of its own (``airflow-bench-trig``, port 47193, LocalExecutor on the stack's Postgres, this folder's
  triggerer_dags/ as its DAGs) whose one run maps a task over the 500 jobs: each task defers at once to the
  project's AzureMLJobTrigger (default poll policy, log streaming on), so ONE `airflow triggerer` process runs all
  500 waits, and the scheduler and executor resume each task when its trigger fires.

Measured: the triggerer's CPU seconds per minute and peak RSS (psutil, every 2 s, the triggerer process and its
children); every request the AML double logged (its /_admin/requests), per kind and per job-minute; per job, the
requests in each full minute once it is quiet (from one minute after its wait's first status call to its end);
and the delay from the job's end (the double's endTimeUtc) to its task's completion (the task instance's end_date).

Targets (issue 11): p95 delay <= 20 s and max <= 30 s; requests of all kinds <= 6 in any full minute of a quiet job;
triggerer CPU below one core (worst minute < 60 CPU s); peak RSS <= 1 GiB (the sum of every triggerer process's
own peak). Also checked, so the run tests what it claims: all waits deferred at once (>= 500).
Writes bench/results/triggerer.json. About 15 minutes.

    .venv/bin/python bench/triggerer.py [--jobs 500] [--base-minutes 7] [--spread-minutes 4]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from results import REPO, Check, load_stack_env, write_result

DAGS = REPO / "bench" / "triggerer_dags"
DAG_ID = "bench_triggerer_wait"
AIRFLOW_NAME = "airflow-bench-trig"
AIRFLOW_PORT = 47193
DATABASE = "airflow_bench_trig"
BENCH_CONN_ID = "azureml_bench_trig"


# --- what the triggerer process uses -----------------------------------------------------------------
class ProcessSampler:
    """CPU time and RSS of a process and its children, every ``every`` seconds, in a thread."""

    def __init__(self, pid: int, every: float = 2.0) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.every = every
        self.samples: list[dict] = []
        self.hwm_kib: dict[int, int] = {}
        self._cpu_by_pid: dict[int, float] = {}
        self._cpu_total = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as err:  # noqa: BLE001 - a process that just exited; the next sample sees the rest
                print(f"sampler: {err}", flush=True)
            self._stop.wait(self.every)

    def sample(self) -> None:
        import psutil

        procs = [self.root, *self.root.children(recursive=True)]
        rss = 0
        for proc in procs:
            try:
                times = proc.cpu_times()
                cpu = times.user + times.system + times.children_user + times.children_system
                rss += proc.memory_info().rss
                hwm = peak_kib(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            last = self._cpu_by_pid.get(proc.pid, 0.0)
            self._cpu_total += max(0.0, cpu - last)  # a process's CPU since the last sample (a new one: all)
            self._cpu_by_pid[proc.pid] = cpu
            self.hwm_kib[proc.pid] = max(self.hwm_kib.get(proc.pid, 0), hwm)
        self.samples.append({"t": time.time(), "cpu_s": round(self._cpu_total, 3), "rss_mib": round(rss / 2**20, 1),
                             "processes": len(procs)})


def peak_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_per_minute(samples: list[dict], start: float, end: float) -> list[float]:
    """CPU seconds in each full minute from ``start`` (linear between samples)."""
    def cpu_at(t: float) -> float:
        for a, b in zip(samples, samples[1:]):
            if a["t"] <= t <= b["t"]:
                return a["cpu_s"] + (b["cpu_s"] - a["cpu_s"]) * (t - a["t"]) / max(b["t"] - a["t"], 1e-9)
        return samples[-1]["cpu_s"] if t > samples[-1]["t"] else samples[0]["cpu_s"]
    minutes = int((min(end, samples[-1]["t"]) - start) // 60)
    return [round(cpu_at(start + 60 * (m + 1)) - cpu_at(start + 60 * m), 2) for m in range(minutes)]


# --- what the AML double saw -------------------------------------------------------------------------
class RequestLog:
    """The double's request log, pulled every ``every`` seconds (its in-memory log is a bounded deque)."""

    def __init__(self, admin, every: float = 10.0) -> None:
        self.admin = admin
        self.every = every
        self.entries: list[dict] = []
        self._since = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def pull(self) -> None:
        fresh = self.admin.requests(since=self._since)["recent"]
        fresh = [r for r in fresh if r["time"] > self._since]
        if fresh:
            self._since = max(r["time"] for r in fresh)
            self.entries.extend(fresh)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.pull()
            except Exception as err:  # noqa: BLE001 - pulled again at the next tick
                print(f"request log: {err}", flush=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.pull()


def request_kind(entry: dict) -> tuple[str, str | None]:
    """(kind, job name) of one logged request; kind is the double's route key, job None if it names none."""
    path = urllib.parse.unquote(entry["path"])
    route = entry["route"]
    if route == "GET file" and path.startswith("/_files/"):
        return route, path[len("/_files/"):].split("/", 1)[0]
    if route in ("GET job", "PUT job", "POST job cancel"):
        return route, path.rstrip("/").split("/jobs/", 1)[1].split("/", 1)[0]
    if route in ("GET run details", "GET run"):
        return route, path.split("/runs/", 1)[1].split("/", 1)[0]
    return route, None


# --- Airflow -----------------------------------------------------------------------------------------
def task_instances(airflow, run_id: str) -> list[dict]:
    quoted = urllib.parse.quote(run_id, safe="")
    found: list[dict] = []
    while True:
        page = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances?limit=100&offset={len(found)}")
        found.extend(page["task_instances"])
        if not page["task_instances"] or len(found) >= page["total_entries"]:
            return found


STATES = ("deferred", "success", "failed", "scheduled", "queued", "running", "up_for_retry")


def state_counts(airflow, run_id: str) -> dict[str, int]:
    """How many of the mapped tasks are in each state (one small query per state)."""
    quoted = urllib.parse.quote(run_id, safe="")
    counts = {}
    for state in STATES:
        page = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances?task_id=wait&state={state}&limit=1")
        if page["total_entries"]:
            counts[state] = page["total_entries"]
    return counts


def ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def full_minutes(times: list[float], start: float, end: float) -> list[int]:
    """How many of ``times`` fall in each full minute [start + 60 m, start + 60 (m + 1)) before ``end``."""
    counts = [0] * max(0, int((end - start) // 60))
    for t in times:
        m = int((t - start) // 60)
        if 0 <= m < len(counts):
            counts[m] += 1
    return counts


def stop_unfinished_jobs(double) -> None:
    """A run cut short: cancel the jobs still running on the VM (the double kills their processes), so no
    sleep outlives the benchmark."""
    from devstack.aml.admin import AmlDoubleAdmin

    try:
        db = sqlite3.connect(str(double.state_dir / "aml.sqlite"))
        names = [row[0] for row in db.execute(
            "SELECT name FROM jobs WHERE status NOT IN ('Completed', 'Failed', 'Canceled')")]
        db.close()
        if not names:
            return
        from edge_training.hooks.azureml import AzureMLHook

        print(f"canceling {len(names)} unfinished job(s)", flush=True)
        with AzureMLHook(azureml_conn_id=BENCH_CONN_ID) as hook:
            client = hook.get_conn()
            with ThreadPoolExecutor(max_workers=6) as pool:
                list(pool.map(client.jobs.begin_cancel, names))
        admin = AmlDoubleAdmin(double.endpoint, double.ca_file)
        deadline = time.monotonic() + 60
        while admin.jobs_in_flight() and time.monotonic() < deadline:
            time.sleep(1)
    except Exception as err:  # noqa: BLE001 - cleanup: say what is left, do not hide the run's own error
        print(f"could not cancel the unfinished jobs: {err}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--base-minutes", type=float, default=7.0, help="first job end, after the submits")
    parser.add_argument("--spread-minutes", type=float, default=4.0, help="job ends spread over this")
    args = parser.parse_args()
    # A TERM (e.g. from `timeout`) stops the run through the finally below: Airflow, Postgres and the double too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = load_stack_env()

    from devstack import scale
    from devstack.airflow_local import LocalAirflow
    from devstack.aml import bootstrap
    from devstack.aml.admin import AmlDoubleAdmin
    from devstack.aml.testing import PrivateDouble, connection_json, free_port, ml_client

    tmp = Path(tempfile.mkdtemp(prefix="bench-triggerer-"))
    double = PrivateDouble(port=free_port(), state_dir=tmp / "state", log_file=tmp / "double.log", stack_env=env,
                           extra_args=("--job-mode", "host"))
    started_scale: list[str] = []
    airflow = None
    t_begin = time.time()
    try:
        double.start()
        bootstrap.register(ml_client(double, f"BenchTrig{double.port}"), env)
        admin = AmlDoubleAdmin(double.endpoint, double.ca_file)
        conn = connection_json(double, f"BenchTrigger{double.port}")
        os.environ[f"AIRFLOW_CONN_{BENCH_CONN_ID.upper()}"] = conn
        print(f"private AML double (host job mode) at {double.endpoint}; log {double.log_file}", flush=True)

        started_scale = scale.up(redis=False)
        airflow = LocalAirflow(
            name=AIRFLOW_NAME, port=AIRFLOW_PORT, sql_alchemy_conn=scale.database(DATABASE),
            extra_env={
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW_CONN_AZUREML_DEFAULT": conn,  # the triggerer's AML connection: the private double
                "AIRFLOW__CORE__PARALLELISM": "32",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "1000",
                "AIRFLOW__TRIGGERER__CAPACITY": "1000",
                "AIRFLOW__API__MAXIMUM_PAGE_LIMIT": "100",
            })
        airflow.reset()
        airflow.start()
        airflow.wait_dag_parsed(DAG_ID)
        triggerer_pid = airflow.ctx.running_pid(f"{AIRFLOW_NAME}-triggerer")
        if triggerer_pid is None:
            raise SystemExit("the bench Airflow's triggerer is not running")
        t_ready = time.time()
        print(f"airflow {AIRFLOW_NAME} ready after {t_ready - t_begin:.0f} s; triggerer pid {triggerer_pid}",
              flush=True)

        # -- the jobs: real sleeps on the VM, ending spread over the window --------------------------
        from edge_training.hooks.azureml import AzureMLHook, CommandJobSpec

        run = uuid.uuid4().hex[:6]
        names = [f"bench-trig-{run}-{i:03d}" for i in range(args.jobs)]
        order = list(range(args.jobs))
        random.Random(run).shuffle(order)  # ends not in map-index order (nor in deferral order)
        t_submit = time.time()
        first_end = t_submit + args.base_minutes * 60
        target_end = {names[i]: first_end + args.spread_minutes * 60 * rank / max(1, args.jobs - 1)
                      for rank, i in enumerate(order)}
        submitted: dict[str, float] = {}
        with AzureMLHook(azureml_conn_id=BENCH_CONN_ID) as hook:
            def submit(name: str) -> None:
                seconds = target_end[name] - time.time()
                hook.submit_command_job(name, CommandJobSpec(
                    command=f'echo "started {name}"; sleep {seconds:.1f}; echo "finished {name}"',
                    environment=env["EDGE_AML_ENVIRONMENT"], compute=env["EDGE_AML_COMPUTE"],
                    experiment_name="bench-triggerer"))
                submitted[name] = time.time()

            with ThreadPoolExecutor(max_workers=6) as pool:
                list(pool.map(submit, names))
        t_submitted = time.time()
        print(f"{len(names)} jobs submitted in {t_submitted - t_submit:.0f} s; first ends at +{args.base_minutes} min",
              flush=True)

        # -- the run: 500 tasks defer onto the one triggerer -------------------------------------------
        requests = RequestLog(admin)
        requests.start()
        sampler = ProcessSampler(triggerer_pid)
        sampler.start()
        run_id = f"bench-{run}"
        t_run = time.time()
        airflow.trigger(DAG_ID, conf={"jobs": names}, run_id=run_id)
        states: list[dict] = []
        deadline = first_end + args.spread_minutes * 60 + 180  # every task done 3 min after the last job end
        while time.time() < deadline:
            counts = state_counts(airflow, run_id)
            states.append({"t": round(time.time() - t_run, 1), **counts})
            last = sampler.samples[-1] if sampler.samples else ""
            print(f"+{time.time() - t_run:5.0f} s  {counts}  triggerer {last}", flush=True)
            if counts.get("success", 0) + counts.get("failed", 0) >= args.jobs:
                break
            time.sleep(5)
        t_end = time.time()
        sampler.stop()
        requests.stop()

        # -- what happened ------------------------------------------------------------------------------
        tis = {ti["map_index"]: ti for ti in task_instances(airflow, run_id) if ti["task_id"] == "wait"}
        db = sqlite3.connect(str(double.state_dir / "aml.sqlite"))
        jobs = {row[0]: {"status": row[1], **json.loads(row[2])} for row in
                db.execute("SELECT name, status, runtime FROM jobs WHERE name LIKE ?", (f"bench-trig-{run}-%",))}
        db.close()
        by_job: dict[str, dict[str, list[float]]] = {n: {} for n in names}
        kinds_total: dict[str, int] = {}
        for entry in requests.entries:
            if not (t_run <= entry["time"] <= t_end):
                continue
            kind, job = request_kind(entry)
            kinds_total[kind] = kinds_total.get(kind, 0) + 1
            if job in by_job:
                by_job[job].setdefault(kind, []).append(entry["time"])

        rows = []
        for index, name in enumerate(names):
            job, ti = jobs.get(name, {}), tis.get(index, {})
            calls = by_job[name]
            status_calls = sorted(calls.get("GET job", []))
            ended = job.get("end")
            wait_start = status_calls[0] if status_calls else None
            noticed = next((t for t in status_calls if ended and t >= ended), None)
            done = ts(ti.get("end_date"))
            all_calls = sorted(t for kind, times in calls.items() if kind != "PUT job" for t in times)
            quiet_from = wait_start + 60 if wait_start else None
            minutes = full_minutes(all_calls, quiet_from, ended) if quiet_from and ended else []
            rows.append({
                "job": name, "map_index": index, "job_status": job.get("status"), "ti_state": ti.get("state"),
                "command_s": round(job["command_end"] - job["command_start"], 1) if job.get("command_end") else None,
                "wait_start": wait_start, "job_end": ended, "task_end": done,
                "deferred_before_end": bool(wait_start and ended and wait_start < ended),
                "notice_s": round(noticed - ended, 2) if noticed and ended else None,
                "delay_s": round(done - ended, 2) if done and ended else None,
                "quiet_minutes": minutes,
                "calls": {kind: len(times) for kind, times in calls.items()},
            })

        delays = [r["delay_s"] for r in rows if r["delay_s"] is not None]
        notices = [r["notice_s"] for r in rows if r["notice_s"] is not None]
        quiet = [m for r in rows for m in r["quiet_minutes"]]
        job_minutes = sum((min(r["job_end"], t_end) - r["wait_start"]) / 60 for r in rows
                          if r["wait_start"] and r["job_end"])
        deferred_peak = max((s.get("deferred", 0) for s in states), default=0)
        cpu_minutes = cpu_per_minute(sampler.samples, t_run, t_end) if len(sampler.samples) > 1 else []
        peak_rss_mib = sum(sampler.hwm_kib.values()) / 1024
        missing = [r["job"] for r in rows if r["delay_s"] is None]
        failed = [r["job"] for r in rows if r["ti_state"] != "success" or r["job_status"] != "Completed"]
        checks = [
            Check("waits deferred on the one triggerer at once (peak of the 5 s samples)", deferred_peak,
                  args.jobs, "waits", at_most=False),
            Check("job end -> task completion, p95", percentile(delays, 95) if delays else float("inf"), 20.0, "s"),
            Check("job end -> task completion, max", max(delays) if delays and not missing else float("inf"),
                  30.0, "s"),
            Check("AML requests of all kinds in a full minute of a quiet job, worst job-minute",
                  max(quiet) if quiet else float("inf"), 6.0, "requests"),
            Check("triggerer CPU, worst full minute", max(cpu_minutes) if cpu_minutes else float("inf"), 60.0,
                  "CPU s/min"),
            Check("triggerer peak RSS (sum of its processes' own peaks)", peak_rss_mib, 1024.0, "MiB"),
        ]
        details = {
            "jobs": args.jobs,
            "tasks failed or jobs not Completed": len(failed),
            "tasks deferred after their job had ended": sum(1 for r in rows if not r["deferred_before_end"]),
            "submit 500 jobs, s": round(t_submitted - t_submit, 1),
            "trigger run -> all deferred, s": next((s["t"] for s in states if s.get("deferred", 0) >= args.jobs),
                                                   None),
            "delay job end -> task completion, s (median, p95, max)":
                [round(statistics.median(delays), 1), round(percentile(delays, 95), 1), round(max(delays), 1)]
                if delays else None,
            "job end -> trigger's next status call (seen from the double), s (median, p95, max)":
                [round(statistics.median(notices), 1), round(percentile(notices, 95), 1), round(max(notices), 1)]
                if notices else None,
            "quiet job-minutes measured": len(quiet),
            "requests in a quiet job-minute (mean, worst)":
                [round(statistics.mean(quiet), 2), max(quiet)] if quiet else None,
            "AML requests per job-minute over the whole wait, by kind (double's route keys)":
                {k: round(v / job_minutes, 3) for k, v in sorted(kinds_total.items())} if job_minutes else None,
            "job-minutes waited": round(job_minutes, 1),
            "triggerer CPU s per full minute (from the run's trigger)": cpu_minutes,
            "triggerer RSS, MiB (peak of the summed samples; sum of per-process peaks)":
                [max((s["rss_mib"] for s in sampler.samples), default=None), round(peak_rss_mib, 1)],
            "triggerer processes (max)": max((s["processes"] for s in sampler.samples), default=None),
            "window": f"ends spread over {args.spread_minutes} min from +{args.base_minutes} min after the submits",
        }
        if missing:
            details["tasks with no completion or job with no end"] = missing[:20]
        document = write_result("triggerer", checks, {"jobs": rows, "states": states, "triggerer": sampler.samples},
                                details=details)
        return 0 if document["ok"] else 1
    finally:
        if double.proc is not None and double.proc.poll() is None:
            stop_unfinished_jobs(double)
        if airflow is not None:
            print(f"{AIRFLOW_NAME}: stopped {airflow.stop()}", flush=True)
        if started_scale:
            from devstack import scale

            scale.down(only=started_scale)
        double.stop()
        print(f"double log: {double.log_file}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
