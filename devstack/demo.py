"""`make demo`: the edge_training DAG end to end on the local edge stack, through the real scheduler.

    python -m devstack.demo up [YYYY-MM-DD]   # stack up, seed, Airflow up, run one partition
    python -m devstack.demo down              # stop Airflow (the stack stays until make stack-down)

The last line printed by `up` is the run's summary JSON (partition, aml_job, model, image, status,
ui, training_page, lineage: the datasets its OpenLineage events name, login, and deployment: the
edge_deploy run the model asset event started, with the version that serves and its serving_url). The
Airflow UI stays up until `make demo-down` or `make stack-down`.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

from devstack.airflow_local import ADMIN_USER, LocalAirflow
from devstack.lineage_files import datasets, file_transport_env, run_events
from devstack.base import REPO, StackError

DAG_ID = "edge_training"
DEPLOY_DAG_ID = "edge_deploy"
#: The demo's OpenLineage namespace; its events are files under its Airflow home (devstack/lineage_files.py).
LINEAGE_NAMESPACE = "edge-demo"


def newest_seeded_partition() -> str:
    """The newest `date=YYYY-MM-DD` folder that has its _SUCCESS marker in the Stack Hub account."""
    from devstack.seed import list_partitions

    dates = list_partitions()
    if not dates:
        raise StackError("no seeded partitions found in the Stack Hub account; run `make seed`")
    return dates[-1].isoformat()


def partition_key(date: str) -> str:
    """The CronPartitionTimetable key for a partition date (the DAG's cron ticks at 00:00 UTC)."""
    time.strptime(date, "%Y-%m-%d")  # validates, raising ValueError with the bad value
    return f"{date}T00:00:00"


def run_partition(airflow: LocalAirflow, date: str, *, timeout: float = 1200) -> dict:
    """Trigger one partition through the API, wait for it, and return its summary line."""
    airflow.wait_dag_parsed(DAG_ID)
    run_id = f"demo__{date}__{int(time.time())}"
    airflow.trigger(DAG_ID, partition_key=partition_key(date), run_id=run_id)
    print(f"triggered {DAG_ID} run {run_id} for partition {date}", flush=True)
    run = airflow.wait_run(DAG_ID, run_id, timeout=timeout)
    tis = airflow.task_instances(DAG_ID, run_id)
    states = {task_id: ti["state"] for task_id, ti in tis.items()}
    summary: dict = {}
    if states.get("summary") == "success":
        summary = airflow.xcom(DAG_ID, run_id, "summary")
    summary.update(
        {
            "partition": summary.get("partition") or date,
            "run_id": run_id,
            "run_state": run["state"],
            "task_states": states,
        }
    )
    if run["state"] != "success":
        summary["status"] = "failed"
        failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
        summary["failed_tasks"] = failed
    return summary


def deployment(airflow: LocalAirflow, key: str, *, after: str) -> dict:
    """The edge_deploy run the training's model asset event started: which version serves, and where."""
    run = airflow.wait_asset_triggered_run(DEPLOY_DAG_ID, key, after=after)
    states = {t: ti["state"] for t, ti in airflow.task_instances(DEPLOY_DAG_ID, run["dag_run_id"]).items()}
    result = {"run_id": run["dag_run_id"], "run_state": run["state"], "task_states": states}
    if states.get("summary") == "success":
        result.update(airflow.xcom(DEPLOY_DAG_ID, run["dag_run_id"], "summary"))
    return result


def up(date: str | None) -> int:
    subprocess.run([sys.executable, "-m", "devstack", "up"], check=True, cwd=REPO)
    subprocess.run([sys.executable, "-m", "devstack.seed"], check=True, cwd=REPO)
    date = date or newest_seeded_partition()
    airflow = LocalAirflow()
    lineage = airflow.home / "openlineage"
    lineage.mkdir(parents=True, exist_ok=True)
    airflow.extra_env.update(file_transport_env(lineage, LINEAGE_NAMESPACE))
    airflow.start()
    # edge_deploy starts paused (a deployment decision); the demo deploys what it trains.
    airflow.wait_dag_parsed(DEPLOY_DAG_ID)
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    summary = run_partition(airflow, date)
    if summary.get("status") == "success":
        summary["deployment"] = deployment(airflow, partition_key(summary["partition"]), after=started)
    events = run_events(lineage, summary["run_id"], until_complete=set(summary["task_states"]), timeout=60)
    summary["lineage"] = {"events": str(lineage), "event_count": len(events), **datasets(events)}
    summary["ui"] = f"{airflow.base_url}/dags/{DAG_ID}/runs/{summary['run_id']}"
    summary["training_page"] = f"{airflow.base_url}/plugin/edge-training"
    summary["login"] = {"user": ADMIN_USER, "password": airflow.admin_password}
    print(f"Airflow UI: {airflow.base_url}  (user {ADMIN_USER}, password {airflow.admin_password});"
          f" Edge training page: {summary['training_page']}; stop it with `make demo-down`", flush=True)
    print(json.dumps(summary, sort_keys=True), flush=True)
    # A shipped model must be serving; a gated one (worse than production) is not deployed, by design.
    deployed = summary.get("status") != "success" or summary.get("deployment", {}).get("status") == "serving"
    return 0 if summary.get("run_state") == "success" and deployed else 1


def down() -> int:
    stopped = LocalAirflow().stop()
    print(f"airflow: stopped {', '.join(stopped)}" if stopped else "airflow: not running")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "down":
        return down()
    date = argv[1] if len(argv) > 1 and argv[1] else None
    try:
        return up(date)
    except (StackError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
