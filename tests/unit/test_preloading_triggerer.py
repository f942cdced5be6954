"""preloading_triggerer: the triggers' modules are imported before Airflow's triggerer command runs.

A fresh interpreter (so nothing is imported yet) runs the entry point with Airflow's ``triggerer_run``
(what the ``airflow triggerer`` command calls to start the job that forks the trigger runner) replaced by
a probe: at that moment every preload module must be in sys.modules, and the command line must have
reached Airflow's CLI. tests/e2e/test_edge_training_dag.py checks that the tests' triggerer logged the
preload before it started; bench/overhead.py's first round measures what it saves.
"""

from __future__ import annotations

from tests.unit.fresh_interpreter import run_probe

PROBE = """
import json, sys
import airflow.cli.commands.triggerer_command as command
from edge_training import preloading_triggerer
before = [m for m in ("azure.ai.ml", "edge_training.triggers.azureml") if m in sys.modules]

def probe(skip_serve_logs, capacity, *rest):
    missing = [m for m in preloading_triggerer.TRIGGERER_PRELOAD_MODULES if m not in sys.modules]
    print(json.dumps({"before": before, "missing": missing, "capacity": capacity}))

command.triggerer_run = probe
import airflow.utils.db as db  # no metadata database here: the command's check of it is skipped
db.check_and_run_migrations = db.synchronize_log_template = lambda *a, **k: None
preloading_triggerer.main(["--capacity", "7", "--skip-serve-logs"])
"""


def test_the_entry_point_imports_every_preload_module_before_the_triggerer_starts(tmp_path):
    found = run_probe(PROBE, tmp_path)
    assert found["before"] == [], found  # the probe would prove nothing otherwise
    assert found["missing"] == [], f"not imported when the triggerer started: {found['missing']}"
    assert found["capacity"] == 7, "the command line must reach `airflow triggerer`"
