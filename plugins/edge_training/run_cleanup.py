"""Cancel the AML job a failed run left running on the edge VM.

A person who marks the deferred ``submit_training`` failed expects its job to stop: the triggerer calls the
trigger's ``on_kill``, which cancels it. Only a trigger some triggerer has started hears of the kill,
though. In the seconds between the deferral and a triggerer starting the trigger (longer while the triggerer
is stalled, down or restarting), Airflow 3.3 drops the trigger without ``on_kill``, and the job would run on
to its end on a VM whose ``edge_vm`` slot the failed task has already given back: one training more on the
VM than the pool allows.

The failed task fails its run, and a failed run calls the DAG's ``on_failure_callback`` in the dag-processor
whatever the triggerer is doing. :class:`CancelJobsLeftRunning` is that callback: for each task it watches
that has ended (in a state after which it will not follow its job again, the states in which the trigger's
``on_kill`` cancels too), it reads the job name the task stored before it deferred and cancels the job if it
still runs (a job already finished or canceled is left alone, so the usual case, where ``on_kill`` got there
first, costs one status call).

A run marked failed as a whole calls no callback in Airflow 3.3; its deferred task's trigger cancels the
job once started, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)


def run_task_states(dag_id: str, run_id: str, task_ids: Sequence[str]) -> dict[str, str | None]:
    """The states of ``task_ids`` in one run, asked of the process's supervisor (the dag-processor's here)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, task_ids=list(task_ids), run_ids=[run_id])
    return dict((states or {}).get(run_id, {}))


def stored_job_name(dag_id: str, run_id: str, task_id: str) -> str | None:
    """The AML job the task deferred on: it stores the name (with its log offset) before it defers."""
    from airflow.sdk.execution_time.xcom import XCom

    from edge_training.triggers.azureml import LOG_OFFSET_XCOM_KEY

    stored = XCom.get_one(key=LOG_OFFSET_XCOM_KEY, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1)
    if isinstance(stored, Mapping) and stored.get("job_name"):
        return str(stored["job_name"])
    return None


class CancelJobsLeftRunning:
    """DAG ``on_failure_callback``: cancel the AML job of each watched task that has ended.

    :param task_ids: the tasks that submit an AML job and wait for it deferred.
    :param azureml_conn_id: the Airflow connection of the AML workspace.
    :param cancel_wait_s: how long to wait for AML to confirm each cancel.
    """

    def __init__(self, task_ids: Sequence[str], azureml_conn_id: str = "azureml_default",
                 cancel_wait_s: float = 10.0) -> None:
        self.task_ids = list(task_ids)
        self.azureml_conn_id = azureml_conn_id
        self.cancel_wait_s = cancel_wait_s

    def jobs_left(self, dag_id: str, run_id: str) -> dict[str, str]:
        """{task_id: job name} of the watched tasks that have ended after storing a job."""
        from edge_training.triggers.azureml import TASK_ENDED_STATES

        states = run_task_states(dag_id, run_id, self.task_ids)
        jobs = {}
        for task_id in self.task_ids:
            if states.get(task_id) in TASK_ENDED_STATES and (name := stored_job_name(dag_id, run_id, task_id)):
                jobs[task_id] = name
        return jobs

    def __call__(self, context: Mapping[str, Any]) -> None:
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        jobs = self.jobs_left(dag_id, run_id)
        if not jobs:
            return
        from edge_training.hooks.azureml import AzureMLHook

        hook = AzureMLHook(azureml_conn_id=self.azureml_conn_id)
        try:
            for task_id, name in jobs.items():
                try:
                    job = hook.cancel_job(name, wait_s=self.cancel_wait_s)
                except Exception:  # noqa: BLE001 - one job's failed cancel must not keep the others running
                    log.exception("Run %s of %s failed: could not cancel AML job %s of %s", run_id, dag_id, name,
                                  task_id)
                    continue
                log.info("Run %s of %s failed after %s ended: its AML job %s is %s", run_id, dag_id, task_id,
                         name, job.status)
        finally:
            hook.close()
