"""edge_training.pool_order: the edge_vm pool serves runs oldest first. No services needed: real task
instances of the real DAG, and the hook as Airflow's settings call it (through plugins/airflow_local_settings.py).
The effect through the scheduler is tests/e2e/test_edge_training_dag.py's one-slot queue test."""

from __future__ import annotations

from pathlib import Path

import pytest

import airflow.settings
from airflow.dag_processing.dagbag import DagBag
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.serialization.serialized_objects import DagSerialization
from edge_training import pool_order

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scheduler_dag():
    """The DAG as the scheduler holds it (serialized), which is what task instances are made from."""
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["edge_training"]))


def run(number: int) -> DagRun:
    dag_run = DagRun(dag_id="edge_training", run_id=f"run-{number}")
    dag_run.id = number
    return dag_run


def weight(scheduler_dag, task_id: str, dag_run: DagRun | None) -> int:
    """The weight a task instance of ``dag_run`` gets when Airflow creates it (TaskInstance, then the
    settings' mutation hook with the run, as DagRun.verify_integrity does)."""
    ti = TaskInstance(scheduler_dag.get_task(task_id), run_id="r", dag_version_id=None)
    airflow.settings.task_instance_mutation_hook(ti, dag_run=dag_run)
    return ti.priority_weight


def test_airflow_loads_the_policy_from_the_plugins_folder():
    """Airflow creates a run's task instances through the hook only when airflow_local_settings has one
    (an entry-point policy alone leaves ``is_noop`` set and is skipped)."""
    assert airflow.settings.task_instance_mutation_hook.is_noop is False
    impls = airflow.settings.get_policy_plugin_manager().hook.task_instance_mutation_hook.get_hookimpls()
    assert [impl.plugin_name for impl in impls] == ["AirflowLocalSettingsPolicy"]


def test_an_older_run_outranks_a_newer_one_in_the_edge_vm_pool(scheduler_dag):
    strategy = scheduler_dag.get_task("submit_training").weight_rule.get_weight(
        TaskInstance(scheduler_dag.get_task("submit_training"), run_id="r", dag_version_id=None))
    weights = [weight(scheduler_dag, "submit_training", run(n)) for n in (1, 2, 3, 10_000)]
    assert weights == sorted(weights, reverse=True) and len(set(weights)) == 4, weights
    assert weights[0] == strategy + pool_order.RUN_RANKS - 1


def test_other_pools_keep_their_strategys_weight(scheduler_dag):
    for task_id in ("register_model", "validate_partition", "summary"):
        assert scheduler_dag.get_task(task_id).pool != pool_order.EDGE_VM_POOL
        assert weight(scheduler_dag, task_id, run(1)) == weight(scheduler_dag, task_id, None)
        assert weight(scheduler_dag, task_id, run(1)) == weight(scheduler_dag, task_id, run(9))


def test_applying_the_hook_again_changes_nothing(scheduler_dag):
    """Airflow applies it on every refresh of a task instance; the weight must not grow each time."""
    ti = TaskInstance(scheduler_dag.get_task("submit_training"), run_id="r", dag_version_id=None)
    airflow.settings.task_instance_mutation_hook(ti, dag_run=run(7))
    once = ti.priority_weight
    airflow.settings.task_instance_mutation_hook(ti, dag_run=run(7))
    ti.refresh_from_task(scheduler_dag.get_task("submit_training"), dag_run=run(7))
    assert ti.priority_weight == once


def test_without_the_run_the_weight_is_the_strategys(scheduler_dag):
    without = weight(scheduler_dag, "submit_training", None)
    assert without < pool_order.RUN_RANKS // 2
    assert weight(scheduler_dag, "submit_training", run(1)) > without


def test_ranks_stop_at_zero_and_weights_fit_the_database():
    assert pool_order.run_rank(1) > pool_order.run_rank(2) > 0
    assert pool_order.run_rank(pool_order.RUN_RANKS + 5) == 0

    class Task:
        weight_rule = "absolute"
        priority_weight = pool_order.MAX_WEIGHT

    class Ti:
        pool, task = pool_order.EDGE_VM_POOL, Task()
        priority_weight = 0

    ti = Ti()
    pool_order.task_instance_mutation_hook(ti, run(1))
    assert ti.priority_weight == pool_order.MAX_WEIGHT
