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
