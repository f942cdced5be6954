"""Parsing dags/edge_training.py stays cheap: what it imports while the dag-processor parses it.

The dag-processor imports the Airflow modules a DAG file names once, in its long-lived parent, then parses
the file in a fresh child. This test does the same in a fresh interpreter and looks at what the parse
itself imported. The SDKs (azure-ai-ml, azure-storage-blob, docker, paramiko) are imported by the hooks
only when a task runs: one of them at parse time would cost seconds on every parse. The `task`
decorator's imports (the standard provider's PythonOperator, `packaging`) come with the pre-imported
module the DAG file takes `task` from: through the `airflow.sdk` facade they were about a third of the parse.
bench/overhead.py measures the parse time itself (no timing assertion here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "edge_training.py"

PROBE = """
import importlib, json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import iter_airflow_imports

path = sys.argv[1]
for module in iter_airflow_imports(path):
    importlib.import_module(module)
before = set(sys.modules)
bag = DagBag(dag_folder=path, safe_mode=False)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
                  "imported": sorted(set(sys.modules) - before)}))
"""

#: Packages no module of which may be imported while the DAG file is parsed.
NOT_AT_PARSE = ("azure", "docker", "paramiko", "sshtunnel", "msal", "packaging", "pandas", "numpy")
#: Airflow modules the parse must find already imported (the pre-imported module of `task` brings them).
PRE_IMPORTED = ("airflow.providers.standard", "airflow.providers.ssh", "airflow.providers.microsoft")


def parse_in_fresh_interpreter() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    env.pop("AZUREML_CURRENT_CLOUD", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(DAG_FILE)], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_parsing_the_dag_imports_no_sdk_and_nothing_the_dag_processor_pre_imports():
    result = parse_in_fresh_interpreter()
    assert result["errors"] == {} and result["dags"] == ["edge_training"], result
    imported = result["imported"]
    sdk = [m for m in imported if m.split(".")[0] in NOT_AT_PARSE]
    assert not sdk, f"parsing {DAG_FILE.name} imported {sdk[:10]}: import them where the task runs"
    late = [m for m in imported if m.startswith(PRE_IMPORTED)]
    assert not late, (
        f"parsing {DAG_FILE.name} imported {late[:10]}, which the dag-processor would have pre-imported had the "
        "DAG file named their module (e.g. `task` from airflow.sdk.definitions.decorators, not airflow.sdk)"
    )
