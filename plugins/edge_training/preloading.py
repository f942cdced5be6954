"""Modules imported once in a long-lived Airflow process, so the processes it forks start with them.

Three Airflow components fork a short-lived process per unit of work and would otherwise import
this package and its SDKs again in each one:

- the LocalExecutor's workers fork a process per task: :data:`TASK_PRELOAD_MODULES`, imported by
  ``edge_training.executors.PreloadingLocalExecutor`` before it forks its workers (azure-ai-ml alone
  takes seconds per task);
- the triggerer forks its trigger runner when it starts: :data:`TRIGGERER_PRELOAD_MODULES` (the AML
  trigger's first poll would otherwise import azure-ai-ml, inside the first training's wait);
- the dag-processor forks a process per DAG file parse, every ``min_file_process_interval``:
  :data:`DAG_PROCESSOR_PRELOAD_MODULES`, the modules the DAG files import (Airflow's own
  ``parsing_pre_import_modules`` does the same for the Airflow modules a DAG file names).

Airflow has no setting that preloads a triggerer or a dag-processor with modules of one's own, so
:func:`main` is their entry point: ``python -m edge_training.preloading triggerer [options]`` (or
``dag-processor``) imports the component's modules, then runs ``airflow <component> [options]``.
Only importing happens before the fork: no client, socket, thread or cloud registration.

A preloading process keeps the code it imported at its start: restart it after changing this
package (Airflow asks the same of plugins).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

#: What dags/ imports from this package; parsing a DAG file imports none of the SDKs
#: (tests/unit/test_dag_parse_imports.py), so neither does this. Not edge_training.pool_order: every
#: Airflow process has it already, from airflow_local_settings.
DAG_PROCESSOR_PRELOAD_MODULES = (
    "edge_training.assets",
    "edge_training.dag_params",
    "edge_training.hooks.azureml_polling",
    "edge_training.lineage",
    "edge_training.notifications.alerts",
    "edge_training.operators.azureml",
    "edge_training.operators.container_image",
    "edge_training.operators.edge_deploy",
    "edge_training.operators.edge_vm",
    "edge_training.operators.gate",
    "edge_training.operators.retry_policy",
    "edge_training.operators.stackhub_blob",
    "edge_training.partitions",
    "edge_training.run_cleanup",
    "edge_training.windows",
)

#: What a task process would otherwise import on its own start (the slow ones first), then what it
#: imports when it parses its DAG file.
TASK_PRELOAD_MODULES = (
    "azure.ai.ml",
    "azure.ai.ml._artifacts._artifact_utilities",
    "airflow.sdk.execution_time.task_runner",
    "azure.identity",
    "azure.storage.blob",
    "docker",
    "paramiko",
    "airflow.providers.ssh.hooks.ssh",
    "airflow.providers.microsoft.azure.hooks.container_registry",
    *DAG_PROCESSOR_PRELOAD_MODULES,
)

#: What the trigger runner would otherwise import at its first trigger of each kind (the slow ones first).
TRIGGERER_PRELOAD_MODULES = (
    "azure.ai.ml",
    "azure.identity",
    "azure.storage.blob.aio",
    "edge_training.triggers.azureml",
    "edge_training.triggers.stackhub_blob",
)

#: The components :func:`main` starts, with what each imports first and for which of its processes.
COMPONENT_PRELOADS = {
    "triggerer": (TRIGGERER_PRELOAD_MODULES, "the trigger runner"),
    "dag-processor": (DAG_PROCESSOR_PRELOAD_MODULES, "the DAG file parses"),
}


def preload(modules: Sequence[str]) -> list[str]:
    """Import ``modules``; returns their names (an import error fails the component's start, loudly)."""
    for name in modules:
        importlib.import_module(name)
    return list(modules)


def main(argv: list[str] | None = None) -> None:
    """``<component> [options]``: import the component's preload modules, then run ``airflow <component> [options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMPONENT_PRELOADS:
        raise SystemExit(
            f"python -m edge_training.preloading: expected a component, one of {sorted(COMPONENT_PRELOADS)}, "
            f"then its `airflow` options; found {args[:1] or 'nothing'}"
        )
    component = args[0]
    modules, forked = COMPONENT_PRELOADS[component]
    imported = preload(modules)
    from airflow.__main__ import main as airflow_main

    logging.getLogger(__name__).info(
        "Imported %d modules for %s before starting the %s", len(imported), forked, component
    )
    sys.argv = ["airflow", *args]
    airflow_main()


if __name__ == "__main__":
    main()
