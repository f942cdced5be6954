"""A LocalExecutor that imports, once in the scheduler, what every task process would import again.

The LocalExecutor forks its workers from the scheduler when it starts, and each worker forks a process per
task. The scheduler never imports the task runner or the Azure SDKs, so each task process imported them
itself: azure-ai-ml alone takes seconds, paid again by each of the five tasks that call Azure ML (the
``overhead`` benchmark's profile). This executor imports them in ``start()``, just before the workers are
forked, so workers and task processes inherit them. Airflow freezes the collector around that fork, so a
task's collections do not walk (or copy) the inherited objects.

It stays a fork: Airflow 3.3's other route (``mp_start_method = forkserver`` with
``mp_forkserver_preload``) made each task cost more CPU, and tasks running side by side deferred much more
slowly in bench/triggerer.py (see the commit that dropped it). Only importing happens here: no client,
socket, thread or cloud registration, so nothing a fork cannot share is inherited (azure-ai-ml registers
the connection's cloud when a hook builds its client, in the task's own process).

What it imports is :data:`edge_training.preloading.TASK_PRELOAD_MODULES`. Configure it as
``[core] executor = edge_training.executors.PreloadingLocalExecutor``.

It also keeps count of the task workloads it has handed to its workers, because Airflow 3.3.2's
LocalExecutor does not: it never adds them to ``running``, so once a workload leaves ``queued_tasks``,
``has_task`` says the executor does not have it. A deferred task's resume has the same key as the process
that deferred (one try number), and when the trigger fires before the scheduler has read that process's
exit, the scheduler reads the stale "success" while the resume is queued or running, finds no task in the
executor, and fails the try ("finished with state success, but the task instance's state attribute is
queued"). A job that failed within seconds then went up for retry without its error in the log.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from airflow.executors.local_executor import LocalExecutor
from airflow.executors.workloads import ExecuteTask
from airflow.utils.state import TaskInstanceState

from edge_training.preloading import TASK_PRELOAD_MODULES, preload

#: Executor events that do not end a workload.
_NOT_ENDED = frozenset({TaskInstanceState.QUEUED, TaskInstanceState.RUNNING})


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers, and the task processes they fork, start with TASK_PRELOAD_MODULES imported,
    and which knows a task it has handed to a worker until the worker reports it ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Task workloads handed to the workers and not yet reported ended, by task instance key. A key is
        # out twice when a deferred task resumes before its deferring process's exit has been read.
        self._handed_out: Counter = Counter()

    def start(self) -> None:
        imported = preload(TASK_PRELOAD_MODULES)
        self.log.info("Importing %d modules for the task processes before forking the workers", len(imported))
        super().start()

    def _process_workloads(self, workload_list: Any) -> None:
        super()._process_workloads(workload_list)
        for workload in workload_list:
            if isinstance(workload, ExecuteTask):
                self._handed_out[workload.key] += 1

    def change_state(self, key: Any, state: Any, info: Any = None, remove_running: bool = True) -> None:
        if remove_running and state not in _NOT_ENDED and self._handed_out.get(key):
            self._handed_out[key] -= 1
            if not self._handed_out[key]:
                del self._handed_out[key]
        super().change_state(key, state, info, remove_running)

    def has_task(self, task_instance: Any) -> bool:
        """Queued here, or handed to a worker that has not reported it ended (the scheduler asks this
        before failing a queued or running task whose process it was told ended)."""
        return super().has_task(task_instance) or task_instance.key in self._handed_out
