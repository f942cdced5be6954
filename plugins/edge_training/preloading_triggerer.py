"""``airflow triggerer``, with the triggers' modules imported before it forks its trigger runner.

The triggerer runs every trigger in one subprocess, forked when it starts (Airflow 3.3's
``TriggerRunnerSupervisor``). A trigger's class is imported there only when the first trigger of its
kind arrives, and the AML trigger's first poll then imports azure-ai-ml: seconds, added to the wait
of the first training after each triggerer start (bench/overhead.py's first round). Airflow has no
setting that preloads a triggerer, so this entry point imports :data:`TRIGGERER_PRELOAD_MODULES` and
then hands its arguments to Airflow's own CLI as ``airflow triggerer``; the forked runner inherits
the modules. As for the executor's preload, only importing happens before the fork.

Run it in place of ``airflow triggerer``: ``python -m edge_training.preloading_triggerer [options]``.
"""

from __future__ import annotations

import logging
import sys

from edge_training.executors.local_preloading import preload

#: What the runner would otherwise import at its first trigger of each kind (the slow ones first).
TRIGGERER_PRELOAD_MODULES = (
    "azure.ai.ml",
    "azure.identity",
    "azure.storage.blob.aio",
    "edge_training.triggers.azureml",
    "edge_training.triggers.stackhub_blob",
)


def main(argv: list[str] | None = None) -> None:
    """Import the preload modules, then run ``airflow triggerer`` with ``argv`` (default: ours)."""
    imported = preload(TRIGGERER_PRELOAD_MODULES)
    from airflow.__main__ import main as airflow_main

    logging.getLogger(__name__).info(
        "Imported %d modules for the trigger runner before starting the triggerer", len(imported)
    )
    sys.argv = ["airflow", "triggerer", *(sys.argv[1:] if argv is None else argv)]
    airflow_main()


if __name__ == "__main__":
    main()
