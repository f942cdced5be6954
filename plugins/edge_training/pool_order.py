"""The edge VM serves runs in the order they were created: a cluster policy for the ``edge_vm`` pool.

``submit_training`` takes an ``edge_vm`` slot for its AML job's whole life (the pool counts deferred
tasks) and once more, after the job ends, for the step that reads the job's result. Airflow 3.3's
scheduler picks among waiting task instances by priority weight, then by the run's ``logical_date``.
The DAG's partition timetable gives its runs no ``logical_date``, so between its runs the order is
arbitrary (apache/airflow#70880): in a backfill a training whose job had ended could wait for its
result step behind newer runs' whole jobs (bench/backfill.py reports a job's end to its training task's
end), holding back its model's registration and image.

:func:`task_instance_mutation_hook` adds a run rank to the weight of each task instance in the
``edge_vm`` pool: the older the run (run ids are given in creation order), the higher. A finished
job's training then goes before any newer run's submission, and waiting runs start their jobs oldest
first. Weights stay what their strategy says for every other pool. The rank makes these weights large
(about a billion, shown as the task's priority weight): they outrank other tasks for executor slots,
which the pool limits to its few trainings at once.

Airflow applies the hook through ``airflow_local_settings`` (this project's is
``plugins/airflow_local_settings.py``): Airflow 3.3 creates a run's task instances without calling a
mutation hook registered only through the ``airflow.policy`` entry point.
"""

from __future__ import annotations

from typing import Any

#: The pool whose slots are the edge VM's trainings.
EDGE_VM_POOL = "edge_vm"
#: A run's rank is this minus its id: positive for the first billion runs, after which runs tie again.
RUN_RANKS = 2**30
#: The largest weight the metadata database stores (a 32-bit integer column).
MAX_WEIGHT = 2**31 - 1


def run_rank(run_number: int) -> int:
    """The rank of the run with this id: one less for each later run, never below 0."""
    return max(0, RUN_RANKS - run_number)


def _strategy_weight(task_instance: Any) -> int | None:
    """The weight the task's own priority strategy gives (so applying the hook twice adds nothing)."""
    task = getattr(task_instance, "task", None)
    if task is None:
        return None
    from airflow.task.priority_strategy import validate_and_load_priority_weight_strategy

    rule = task.weight_rule
    if not hasattr(rule, "get_weight"):
        rule = validate_and_load_priority_weight_strategy(rule)
    return int(rule.get_weight(task_instance))


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    """Rank an ``edge_vm`` task instance by its run's age; leave every other task instance alone.

    Airflow calls it scheduler-side when it creates or refreshes a task instance, inside a transaction:
    it reads only the objects it is given and opens no session. Without the run (early construction)
    or the task, it changes nothing, and Airflow calls it again once it has them.
    """
    if dag_run is None or getattr(task_instance, "pool", None) != EDGE_VM_POOL:
        return
    run_number = getattr(dag_run, "id", None)
    base = _strategy_weight(task_instance)
    if run_number is None or base is None:
        return
    task_instance.priority_weight = min(MAX_WEIGHT, base + run_rank(int(run_number)))
