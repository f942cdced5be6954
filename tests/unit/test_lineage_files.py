"""OpenLineage events in files (devstack/lineage_files.py): the transport settings and reading a run back."""

from __future__ import annotations

import json

from devstack.lineage_files import datasets, file_transport_env, run_events


def event(run_id: str, task: str, kind: str, inputs=(), outputs=()) -> dict:
    return {"eventType": kind, "job": {"namespace": "ns", "name": f"edge_training.{task}"},
            "run": {"facets": {"airflow": {"dagRun": {"run_id": run_id}}}},
            "inputs": [{"namespace": n, "name": m} for n, m in inputs],
            "outputs": [{"namespace": n, "name": m} for n, m in outputs]}


def test_the_transport_writes_one_file_per_event_from_a_thread(tmp_path):
    env = file_transport_env(tmp_path, "edge-demo")
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "edge-demo"
    assert json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"]) == {
        "type": "file", "log_file_path": str(tmp_path / "event"), "append": False}
    assert env["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] == "True"


def test_a_runs_events_and_the_datasets_they_name(tmp_path):
    written = [
        event("r1", "validate_partition", "START"),
        event("r1", "validate_partition", "COMPLETE", inputs=[("wasbs://training@acct", "telemetry/date=1")]),
        event("r1", "push_image", "COMPLETE", outputs=[("oci://acr", "m@sha256:1")]),
        event("other", "push_image", "COMPLETE", outputs=[("oci://acr", "m@sha256:2")]),
    ]
    for i, item in enumerate(written):
        (tmp_path / f"event-{i}.json").write_text(json.dumps(item))
    (tmp_path / "event-9.json").write_text('{"half": ')  # being written: skipped, waited for

    events = run_events(tmp_path, "r1", timeout=0)
    assert len(events) == 3
    assert datasets(events) == {"inputs": ["wasbs://training@acct/telemetry/date=1"],
                                "outputs": ["oci://acr/m@sha256:1"]}
