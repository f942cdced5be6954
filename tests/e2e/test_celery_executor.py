"""The same DAG, unchanged, under CeleryExecutor with Postgres and Redis and two workers."""

from __future__ import annotations

import pytest

from devstack import scale
from devstack.airflow_local import LocalAirflow
from tests.e2e.support import DAG_ID, run_to_completion

PARTITION = "2026-11-22"


@pytest.fixture(scope="module")
def celery_airflow(stack_env):
    started = scale.up()  # Postgres may already serve the tests' own Airflow: stop only what this started
    instance = LocalAirflow(
        name="airflow-celery",
        port=47182,
        executor="CeleryExecutor",
        sql_alchemy_conn=scale.sql_alchemy_conn(),
        workers=2,
        extra_env={
            "AIRFLOW__CELERY__BROKER_URL": scale.broker_url(),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + scale.sql_alchemy_conn(),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        },
    )
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
    hosts = {ti["hostname"] for ti in tis.values() if ti.get("hostname")}
    assert hosts, "task instances record the worker that ran them"
    summary = celery_airflow.xcom(DAG_ID, run_id, "summary")
    assert summary["partition"] == PARTITION and summary["image"].split("@")[1].startswith("sha256:")
