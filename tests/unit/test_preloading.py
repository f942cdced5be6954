"""edge_training.preloading: the triggerer's and the dag-processor's modules are imported before Airflow's
command for them runs.

A fresh interpreter (so nothing is imported yet) runs the entry point with Airflow's command replaced by a
probe: at that moment every preload module must be in sys.modules, and the command line must have reached
Airflow's CLI. For the dag-processor the probe also parses the DAG files as a forked parse would (Airflow's
own pre-import first): with the preload, the parse imports no module of this package, so a module the DAG
files start to import is caught here until it is added to the list. tests/e2e/test_edge_training_dag.py
checks that the tests' triggerer and dag-processor logged the preload before they started;
bench/overhead.py measures the parse with and without it.
"""

from __future__ import annotations

import subprocess
import sys

from tests.unit.fresh_interpreter import REPO, run_probe

TRIGGERER_PROBE = """
import json, sys
import airflow.cli.commands.triggerer_command as command
from edge_training import preloading
before = [m for m in ("azure.ai.ml", "edge_training.triggers.azureml") if m in sys.modules]

def probe(skip_serve_logs, capacity, *rest):
    missing = [m for m in preloading.TRIGGERER_PRELOAD_MODULES if m not in sys.modules]
    print(json.dumps({"before": before, "missing": missing, "capacity": capacity}))

command.triggerer_run = probe
import airflow.utils.db as db  # no metadata database here: the command's check of it is skipped
db.check_and_run_migrations = db.synchronize_log_template = lambda *a, **k: None
preloading.main(["triggerer", "--capacity", "7", "--skip-serve-logs"])
"""

DAG_PROCESSOR_PROBE = """
import importlib, json, sys
import airflow.cli.commands.dag_processor_command as command
from edge_training import preloading
before = [m for m in preloading.DAG_PROCESSOR_PRELOAD_MODULES if m in sys.modules]

def probe(args):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.file import iter_airflow_imports

    missing = [m for m in preloading.DAG_PROCESSOR_PRELOAD_MODULES if m not in sys.modules]
    parsed = {}
    for path in ("dags/edge_training.py", "dags/edge_deploy.py"):
        for module in iter_airflow_imports(path):  # what the dag-processor pre-imports itself
            importlib.import_module(module)
        loaded = set(sys.modules)
        bag = DagBag(dag_folder=path, safe_mode=False)
        parsed[path] = {"dags": sorted(bag.dags), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                        "imported": sorted(m for m in set(sys.modules) - loaded if m.startswith("edge_training"))}
    print(json.dumps({"before": before, "missing": missing, "num_runs": args.num_runs, "parsed": parsed}))

command.dag_processor = probe
preloading.main(["dag-processor", "--num-runs", "3"])
"""


def test_the_triggerer_entry_imports_every_preload_module_before_the_triggerer_starts(tmp_path):
    found = run_probe(TRIGGERER_PROBE, tmp_path)
    assert found["before"] == [], found  # the probe would prove nothing otherwise
    assert found["missing"] == [], f"not imported when the triggerer started: {found['missing']}"
    assert found["capacity"] == 7, "the command line must reach `airflow triggerer`"


def test_the_dag_processor_entry_preloads_everything_the_dag_files_import_from_the_package(tmp_path):
    found = run_probe(DAG_PROCESSOR_PROBE, tmp_path)
    assert found["before"] == [], found
    assert found["missing"] == [], f"not imported when the dag-processor started: {found['missing']}"
    assert found["num_runs"] == 3, "the command line must reach `airflow dag-processor`"
    for path, parse in found["parsed"].items():
        assert parse["errors"] == {} and parse["dags"], (path, parse)
        assert parse["imported"] == [], (
            f"parsing {path} still imported {parse['imported']}: add them to DAG_PROCESSOR_PRELOAD_MODULES")


def test_an_unknown_component_is_refused_before_anything_starts():
    proc = subprocess.run([sys.executable, "-m", "edge_training.preloading", "scheduler", "--help"],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
                          env={"PYTHONPATH": f"{REPO}:{REPO / 'plugins'}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "expected a component, one of ['dag-processor', 'triggerer']" in proc.stderr, proc.stderr
    assert "found ['scheduler']" in proc.stderr, proc.stderr
