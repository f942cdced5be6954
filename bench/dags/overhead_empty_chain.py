"""The overhead benchmark's parse-time reference: a DAG of as many EmptyOperators as edge_training has tasks.

bench/overhead.py times parsing this file against parsing dags/edge_training.py.
"""

from __future__ import annotations

import pendulum

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, chain

#: edge_training's task count (bench/overhead.py checks that the two agree).
TASKS = 8

with DAG(
    dag_id="overhead_empty_chain",
    description="Reference for bench/overhead.py: a chain of EmptyOperators",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["bench"],
):
    chain(*[EmptyOperator(task_id=f"empty_{i}") for i in range(TASKS)])
