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
"""

from __future__ import annotations

from airflow.executors.local_executor import LocalExecutor

from edge_training.preloading import TASK_PRELOAD_MODULES, preload


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers, and the task processes they fork, start with TASK_PRELOAD_MODULES imported."""

    def start(self) -> None:
        imported = preload(TASK_PRELOAD_MODULES)
        self.log.info("Importing %d modules for the task processes before forking the workers", len(imported))
        super().start()
