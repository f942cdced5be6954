"""PreloadingLocalExecutor: the modules are imported in the scheduler before the workers are forked.

A fresh interpreter (so nothing is imported yet) starts the executor with the fork that spawns the workers
replaced by a probe: at that moment every preload module must be in sys.modules, which is what the forked
workers and their task processes inherit. tests/e2e/test_edge_training_dag.py checks, on the stack, that the
tests' scheduler ran this start before its workers started; bench/overhead.py measures what it saves.
"""

from __future__ import annotations

from tests.unit.fresh_interpreter import run_probe

PROBE = """
import json, sys
from edge_training.executors import PreloadingLocalExecutor
from edge_training.preloading import TASK_PRELOAD_MODULES

seen = {}
executor = PreloadingLocalExecutor(parallelism=2)
before = [m for m in TASK_PRELOAD_MODULES if m in sys.modules]
executor._spawn_workers_with_gc_freeze = lambda n: seen.update(
    fork=executor.is_mp_using_fork, missing=[m for m in TASK_PRELOAD_MODULES if m not in sys.modules])
executor.start()
print(json.dumps({"before": before, **seen}))
"""


def test_start_imports_every_preload_module_before_the_workers_fork(tmp_path):
    found = run_probe(PROBE, tmp_path)
    assert "azure.ai.ml" not in found["before"], found  # the probe would prove nothing otherwise
    assert found["fork"] is True, "the workers must be forked from the scheduler to inherit the modules"
    assert found["missing"] == [], f"imported only after the workers forked: {found['missing']}"


# The executor's bookkeeping of a deferred task's resume, driven the way the scheduler drives it (queue_workload,
# then heartbeat: hand out, then read the workers' results); the test plays the worker, so no process is forked.

def _started(executor_class, monkeypatch):
    import edge_training.executors.local_preloading as local_preloading

    monkeypatch.setattr(local_preloading, "preload", lambda modules: [])
    executor = executor_class(parallelism=4)
    executor._spawn_workers_with_gc_freeze = lambda n: None  # the test is the worker
    executor.start()
    return executor


def _task_instance():
    import uuid

    from airflow.executors.workloads.task import TaskInstanceDTO

    return TaskInstanceDTO(id=uuid.uuid4(), task_id="submit_training", dag_id="edge_training",
                           run_id="manual__2026-11-16", try_number=1, dag_version_id=uuid.uuid4(),
                           map_index=-1, pool_slots=1, priority_weight=1, queue="default")


def _hand_out(executor, ti):
    """The scheduler queues the try and the next heartbeat hands it to a worker: what the worker takes."""
    from airflow.executors.workloads import BundleInfo, ExecuteTask

    executor.queue_workload(ExecuteTask(token="t", dag_rel_path="edge_training.py", log_path=None, ti=ti,
                                        bundle_info=BundleInfo(name="dags-folder")), session=None)
    executor.heartbeat()
    return executor.activity_queue.get()


def _report_ended(executor, workload):
    from airflow.utils.state import TaskInstanceState

    executor.result_queue.put((workload.key, TaskInstanceState.SUCCESS, None))
    executor.heartbeat()
    return executor.get_event_buffer()[workload.key][0]


def _resume_before_the_deferring_exit_is_read(executor):
    ti = _task_instance()
    deferring = _hand_out(executor, ti)  # try 1 runs execute() and defers; its process exits 0
    resumed = _hand_out(executor, ti)  # the trigger fired: the same try is queued again and handed out
    assert resumed.key == deferring.key
    assert _report_ended(executor, deferring) == "success"  # the stale exit, read only now
    return ti, resumed


def test_a_resumed_task_is_still_the_executors_after_its_deferring_process_exit_is_read(monkeypatch):
    from edge_training.executors import PreloadingLocalExecutor

    executor = _started(PreloadingLocalExecutor, monkeypatch)
    ti, resumed = _resume_before_the_deferring_exit_is_read(executor)
    # The scheduler asks this before it fails a queued or running try whose process it was told ended.
    assert executor.has_task(ti), "the resume would be failed as killed externally"
    _report_ended(executor, resumed)
    assert not executor.has_task(ti), "a task whose every process ended is no longer the executor's"


def test_airflows_local_executor_loses_the_resume_which_is_why_the_count_is_kept(monkeypatch):
    """The sequence above reproduces Airflow 3.3.2's race; if this fails, Airflow counts it itself now."""
    from airflow.executors.local_executor import LocalExecutor

    executor = _started(LocalExecutor, monkeypatch)
    ti, _ = _resume_before_the_deferring_exit_is_read(executor)
    assert not executor.has_task(ti)
