"""The overhead benchmark's reference chain: as many no-op tasks as edge_training has, run one after another.

Each task runs through the executor like edge_training's tasks (a Python callable that does nothing), so
the gaps between them are Airflow's own cost per task boundary. Only bench/overhead.py's Airflow parses
this folder (bench/dags is not the project's DAGs folder).
"""

from __future__ import annotations

import pendulum

from airflow.sdk import DAG, chain, task

#: edge_training's task count (bench/overhead.py checks that the two agree).
TASKS = 8


@task
def noop() -> None:
    """Does nothing."""


with DAG(
    dag_id="overhead_noop_chain",
    description="Reference for bench/overhead.py: a chain of no-op tasks",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
    tags=["bench"],
):
    chain(*[noop.override(task_id=f"noop_{i}")() for i in range(TASKS)])
