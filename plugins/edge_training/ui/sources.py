"""What the Edge training page reads: Airflow's metadata database and the AML model registry.

Read on every request, never cached: the page shows what the sources hold now. Only the AML client is
kept between requests (building it loads azure-ai-ml and fetches the workspace's metadata).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from typing import Any

from edge_training.operators.stackhub_blob import VALIDATION_FINDING_KEY
from edge_training.partitions import partition_date_str
from edge_training.ui.rows import GATE, PUSH, REGISTER, RESULT_KEY, SUBMIT, VALIDATE, ModelRecord, RunRecord

READ_TASKS = (VALIDATE, SUBMIT, GATE, REGISTER, PUSH)
READ_KEYS = (RESULT_KEY, VALIDATION_FINDING_KEY)


def run_day(partition_key: str | None, conf: dict | None) -> str | None:
    """The day a run trains: its ``partition`` param when given (manual runs), else its partition key."""
    chosen = (conf or {}).get("partition") or partition_key
    if not chosen:
        return None
    try:
        return partition_date_str(chosen)
    except Exception:  # noqa: BLE001 - a run with a malformed key is not a day the page can place
        return None


def read_runs(session: Any, dag_id: str, days: Sequence[str]) -> list[RunRecord]:
    """The DAG's runs that train one of ``days``."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun

    wanted = set(days)
    rows = session.execute(
        select(DagRun.run_id, DagRun.state, DagRun.run_type, DagRun.partition_key, DagRun.conf,
               DagRun.run_after, DagRun.id).where(DagRun.dag_id == dag_id)
    )
    runs = []
    for run_id, state, run_type, partition_key, conf, run_after, row_id in rows:
        day = run_day(partition_key, conf)
        if day in wanted:
            runs.append(RunRecord(run_id=run_id, day=day, state=str(state) if state else None,
                                  run_type=str(run_type) if run_type else None,
                                  order=(run_after or dt.datetime.min.replace(tzinfo=dt.timezone.utc), row_id)))
    return runs


def read_task_results(session: Any, dag_id: str, run_ids: Sequence[str]
                      ) -> tuple[dict[tuple[str, str], str | None], dict[tuple[str, str, str], Any]]:
    """Task states and the results the page reads (``READ_TASKS`` x ``READ_KEYS``) of ``run_ids``."""
    from sqlalchemy import select

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    states: dict[tuple[str, str], str | None] = {}
    xcoms: dict[tuple[str, str, str], Any] = {}
    for chunk in _chunks(list(run_ids), 500):
        for run_id, task_id, state in session.execute(
            select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(chunk),
                TaskInstance.task_id.in_(READ_TASKS), TaskInstance.map_index == -1)
        ):
            states[(run_id, task_id)] = str(state) if state else None
        for row in session.execute(
            select(XComModel.run_id, XComModel.task_id, XComModel.key, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id.in_(chunk), XComModel.task_id.in_(READ_TASKS),
                XComModel.key.in_(READ_KEYS), XComModel.map_index == -1)
        ):
            xcoms[(row.run_id, row.task_id, row.key)] = XComModel.deserialize_value(row)
    return states, xcoms


def dag_start_day(session: Any, dag_id: str) -> dt.date | None:
    """The first partition day of the DAG's timetable (its start date), from the serialized DAG."""
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id, session=session)
    start = getattr(dag, "start_date", None) if dag is not None else None
    return start.date() if start else None


_hooks: dict[str, Any] = {}
_hooks_lock = threading.Lock()


def azureml_hook(conn_id: str) -> Any:
    """One AzureMLHook per connection for the server's life (the client, not the data, is reused)."""
    with _hooks_lock:
        if conn_id not in _hooks:
            from edge_training.hooks.azureml import AzureMLHook

            _hooks[conn_id] = AzureMLHook(azureml_conn_id=conn_id)
        return _hooks[conn_id]


def read_models(conn_id: str, model_name: str) -> list[ModelRecord]:
    """Every version of ``model_name`` in the registry, newest first, with its tags."""
    versions = azureml_hook(conn_id).list_model_versions(model_name)
    return [ModelRecord(version=str(v.version), tags={str(k): str(t) for k, t in (v.tags or {}).items()})
            for v in versions]


def model_url(conn_id: str, model_name: str, version: str) -> str:
    """The version's page in AML studio (built from the connection's settings; no request)."""
    return azureml_hook(conn_id).model_studio_url(model_name, version)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
