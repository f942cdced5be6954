"""Every file in dags/ imports cleanly: a DAG that cannot be parsed never reaches the scheduler."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_dags_folder_imports_without_errors():
    bag = DagBag(dag_folder=str(DAGS), safe_mode=False)
    assert bag.import_errors == {}, "\n\n".join(f"{f}:\n{e}" for f, e in bag.import_errors.items())
    for dag_id, dag in bag.dags.items():
        assert dag.tasks, f"DAG {dag_id} has no tasks"
