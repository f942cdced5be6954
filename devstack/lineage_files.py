"""OpenLineage events in files: the provider's file transport for a local Airflow, and reading them back.

The demo and the tests' Airflow send their events here (one file per event, so events written at once by
workers, the triggerer and the scheduler never interleave). Production points the provider at Marquez or
another backend instead (README, Lineage).
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def file_transport_env(folder: Path, namespace: str) -> dict[str, str]:
    """Airflow settings that make the OpenLineage provider write each event to a file under ``folder``,
    from a thread of the task process (``execute_in_thread``), not a fork of it."""
    return {
        "AIRFLOW__OPENLINEAGE__NAMESPACE": namespace,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(folder / "event"), "append": False}),
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }


def run_events(folder: Path, run_id: str, *, until_complete: set[str] = frozenset(),
               timeout: float = 120) -> list[dict]:
    """The events of a DAG run's tasks. A task's COMPLETE event is written just after the task reports
    its state, so this waits (up to ``timeout``) until every task in ``until_complete`` has one."""
    deadline = time.monotonic() + timeout
    while True:
        events, partial = [], False
        for path in sorted(folder.glob("event-*.json")):
            try:
                event = json.loads(path.read_text())
            except json.JSONDecodeError:  # being written right now
                partial = True
                continue
            airflow_facet = (event.get("run", {}).get("facets") or {}).get("airflow") or {}
            if (airflow_facet.get("dagRun") or {}).get("run_id") == run_id:
                events.append(event)
        done = {e["job"]["name"].split(".", 1)[1] for e in events if e["eventType"] == "COMPLETE"}
        if (until_complete <= done and not partial) or time.monotonic() > deadline:
            return events
        time.sleep(2)


def datasets(events: list[dict]) -> dict[str, list[str]]:
    """The datasets the COMPLETE events name, as ``namespace/name``: {"inputs": [...], "outputs": [...]}."""
    named: dict[str, set[str]] = {"inputs": set(), "outputs": set()}
    for event in events:
        if event["eventType"] == "COMPLETE":
            for side in named:
                named[side].update(f"{d['namespace']}/{d['name']}" for d in event.get(side) or [])
    return {side: sorted(names) for side, names in named.items()}
