"""The same DAG, unchanged, under CeleryExecutor with Postgres and Redis and two workers."""

from __future__ import annotations

import re

import pytest

from devstack import scale
from devstack.airflow_local import LocalAirflow
from tests.e2e.support import DAG_ID, run_to_completion

PARTITION = "2026-11-22"


def worker_log(instance: LocalAirflow, worker: int):
    return instance.ctx.log_file(f"{instance.name}-worker-{worker}")


@pytest.fixture(scope="module")
def celery_airflow(stack_env):
    started = scale.up()  # Postgres may already serve the tests' own Airflow: stop only what this started
    # A metadata database of its own, new each session: what an earlier session's DAG declared (such as
    # an asset since renamed) must not change this run.
    database = scale.database("airflow_celery", fresh=True)
    instance = LocalAirflow(
        name="airflow-celery",
        port=47182,
        executor="CeleryExecutor",
        sql_alchemy_conn=database,
        workers=2,
        extra_env={
            "AIRFLOW__CELERY__BROKER_URL": scale.broker_url(),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        },
    )
    # Worker logs are appended to across sessions: this session's part starts here.
    instance.log_offsets = {w: worker_log(instance, w).stat().st_size if worker_log(instance, w).exists() else 0
                            for w in range(instance.workers)}
    try:
        instance.start()
        instance.wait_dag_parsed(DAG_ID)
        yield instance
    finally:
        instance.stop()
        scale.down(only=started)


def test_dag_runs_unchanged_on_celery_with_two_workers(celery_airflow: LocalAirflow):
    run_id, run, tis = run_to_completion(celery_airflow, PARTITION)
    states = {t: ti["state"] for t, ti in tis.items()}
    assert run["state"] == "success", states
    assert set(states.values()) == {"success"}, states
    # Every task ran in a Celery worker (the workers' own logs name each workload they executed), and both
    # workers were up and took part in the session.
    executed: dict[int, set[str]] = {}
    for worker in range(celery_airflow.workers):
        since = celery_airflow.log_offsets[worker]
        log = worker_log(celery_airflow, worker).read_bytes()[since:].decode(errors="replace")
        assert f"edge-worker-{worker}@" in log and " ready." in log, f"worker {worker} did not start"
        executed[worker] = set(re.findall(rf"Executing workload in Celery: .*run_id={re.escape(run_id)}/task_id=(\w+)/",
                                          log))
    assert set().union(*executed.values()) == set(tis), executed
    summary = celery_airflow.xcom(DAG_ID, run_id, "summary")
    assert summary["partition"] == PARTITION and summary["image"].split("@")[1].startswith("sha256:")
