"""edge_training.preload: what the scheduler's forkserver imports once for every task process.

multiprocessing's forkserver skips a preload module that fails to import without a word, so a broken
preload would only show as slow tasks. This test imports it as the forkserver does, in a fresh interpreter,
and checks that it brings what the tasks would otherwise import, that it freezes it for the collector, and
that it leaves nothing behind a fork cannot share: no thread, and no azure-ai-ml cloud registration in the
environment (a child inheriting ``AZUREML_CURRENT_CLOUD`` without the registration fails every MLClient call). The stack test
tests/e2e/test_edge_training_dag.py checks that the local Airflow's executor workers come from a
forkserver that preloads it; bench/overhead.py measures what it saves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, os, sys, threading
before = set(sys.modules)
env_before = dict(os.environ)
import edge_training.preload
print(json.dumps({
    "new": sorted(set(sys.modules) - before),
    "threads": [t.name for t in threading.enumerate()],
    "env_added": sorted(set(os.environ) - set(env_before)),
    "frozen": gc.get_freeze_count(),
    "tracked_after": len(gc.get_objects()),
}))
"""

#: What a task process would otherwise import on its own start (the slow ones first).
EXPECTED = ("azure.ai.ml", "airflow.sdk.execution_time.task_runner", "azure.storage.blob", "azure.identity",
            "docker", "paramiko", "edge_training.operators.azureml", "edge_training.operators.container_image")


def test_preload_imports_what_tasks_need_in_a_fresh_interpreter_and_starts_nothing():
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}"}
    env.pop("AZUREML_CURRENT_CLOUD", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    missing = [m for m in EXPECTED if m not in found["new"]]
    assert not missing, f"edge_training.preload: expected it to import {missing}, found them not imported"
    assert found["threads"] == ["MainThread"], found["threads"]
    assert not [k for k in found["env_added"] if k.startswith("AZURE")], found["env_added"]
    # What it imported is frozen: a forked task's collections skip it instead of walking (and copying) it.
    assert found["frozen"] > 100_000 and found["tracked_after"] < found["frozen"] / 10, found

