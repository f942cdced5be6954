"""The modules every task process would import again on its own start: preload them once per scheduler.

With the LocalExecutor each task runs in a process forked from an executor worker, which the scheduler
forks from itself. The scheduler never imports the task runner or the Azure SDKs, so every task process
imported them anew: azure-ai-ml alone takes seconds, paid again by each of the five tasks that call Azure
ML. Airflow 3.3 can start the executor's workers from a forkserver that imports a list of modules once:

    [scheduler]
    mp_start_method = forkserver
    mp_forkserver_preload = edge_training.preload

Workers, and the task processes they fork, then inherit these modules instead of importing them. Importing
(then freezing what was imported, see the end) is all this module does: no client, socket, thread or cloud
registration is made here, so nothing a fork cannot share is inherited (azure-ai-ml registers the cloud of the connection when a hook builds its
client, in the task's own process). multiprocessing skips a preload module that fails to import without a
word, so a test imports this one in a fresh process.
"""

from __future__ import annotations

import gc

# Airflow's task runner: what the forked task process runs first.
import airflow.sdk.execution_time.task_runner  # noqa: F401

# The SDKs the hooks import when they build their clients (azure-ai-ml is the slow one).
import azure.ai.ml  # noqa: F401
import azure.ai.ml._artifacts._artifact_utilities  # noqa: F401
import azure.identity  # noqa: F401
import azure.storage.blob  # noqa: F401
import docker  # noqa: F401
import paramiko  # noqa: F401
from airflow.providers.microsoft.azure.hooks.container_registry import AzureContainerRegistryHook  # noqa: F401
from airflow.providers.ssh.hooks.ssh import SSHHook  # noqa: F401

# What the DAG files import when the task process parses them.
import edge_training.operators.azureml  # noqa: F401
import edge_training.operators.container_image  # noqa: F401
import edge_training.operators.edge_deploy  # noqa: F401
import edge_training.operators.edge_vm  # noqa: F401
import edge_training.operators.gate  # noqa: F401
import edge_training.operators.stackhub_blob  # noqa: F401
import edge_training.notifications.alerts  # noqa: F401

# Last: everything imported above goes to the collector's permanent generation, as Airflow does before it
# forks workers itself. Each forked task process's collections then skip these objects: they neither spend
# time on them (most of a second per task) nor write to, and so copy, the pages shared with the forkserver.
gc.freeze()
