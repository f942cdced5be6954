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

Configure it as ``[core] executor = edge_training.executors.PreloadingLocalExecutor``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from airflow.executors.local_executor import LocalExecutor

#: What a task process would otherwise import on its own start (the slow ones first).
PRELOAD_MODULES = (
    "azure.ai.ml",
    "azure.ai.ml._artifacts._artifact_utilities",
    "airflow.sdk.execution_time.task_runner",
    "azure.identity",
    "azure.storage.blob",
    "docker",
    "paramiko",
    "airflow.providers.ssh.hooks.ssh",
    "airflow.providers.microsoft.azure.hooks.container_registry",
    # What the DAG files import when a task process parses them.
    "edge_training.operators.azureml",
    "edge_training.operators.container_image",
    "edge_training.operators.edge_deploy",
    "edge_training.operators.edge_vm",
    "edge_training.operators.gate",
    "edge_training.operators.stackhub_blob",
    "edge_training.notifications.alerts",
)


def preload(modules: Sequence[str] = PRELOAD_MODULES) -> list[str]:
    """Import ``modules``; returns their names (an import error fails the component's start, loudly)."""
    for name in modules:
        importlib.import_module(name)
    return list(modules)


class PreloadingLocalExecutor(LocalExecutor):
    """LocalExecutor whose workers, and the task processes they fork, start with PRELOAD_MODULES imported."""

    def start(self) -> None:
        self.log.info("Importing %d modules for the task processes before forking the workers", len(preload()))
        super().start()
