"""edge_deploy's parts that need no stack: the stable address's proxy (real sockets), the recorded answer,
which version a run deploys, the approval switch, what may be deployed and how the production mark moves.
The deploy on a real Docker is tested end to end in tests/e2e/test_edge_deploy.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_training.exceptions import InvalidInputError, SmokeTestError
from edge_training.hooks.edge_serving import DeploymentError, image_digest, proxy_source, slot_port
from edge_training.hooks.smoke_test import check_same_answer, recorded_request, smoke_check_tag
from edge_training.operators.edge_deploy import (
    EdgeDeployApprovalOperator,
    EdgeDeployModelOperator,
    ModelNotDeployableError,
    deployment_target,
)

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def version_server(version: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"model": {"version": version}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_proxy_switches_backends_without_a_missed_request(tmp_path):
    """The stable address as it runs on the VM (python3 -c <source> <config>): requests before the switch get
    the old backend, after it the new one, and none in between goes unanswered."""
    blue, green = version_server("1"), version_server("2")
    port, backend_file = free_port(), str(tmp_path / "backend")
    config = {"listen_port": port, "listen_host": "127.0.0.1", "backend_file": backend_file,
              "backend": f"127.0.0.1:{blue.server_address[1]}"}
    proxy = subprocess.Popen([sys.executable, "-c", proxy_source(), json.dumps(config)])
    answers, errors = [], []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "proxy did not start"
                time.sleep(0.05)

        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                        answers.append(json.loads(response.read())["model"]["version"])
                except OSError as exc:
                    errors.append(repr(exc))

        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(0.5)
        subprocess.run([sys.executable, "-c", proxy_source(), "switch", backend_file,
                        f"127.0.0.1:{green.server_address[1]}"], check=True)
        time.sleep(0.5)
        blue.shutdown()  # the old one stops after the switch, as the hook stops it
        blue.server_close()
        time.sleep(0.3)
        stop.set()
        thread.join()
    finally:
        proxy.kill()
        proxy.wait()
        green.shutdown()
    assert errors == []
    switches = [i for i in range(1, len(answers)) if answers[i] != answers[i - 1]]
    assert answers[0] == "1" and answers[-1] == "2" and len(switches) == 1, (len(answers), switches)


def test_the_recorded_answer_round_trips_and_a_different_answer_is_refused():
    smoke = {"request": [{"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 2.0}], "predictions": [0, 1],
             "probabilities": [0.1234567891, 0.9]}
    tag = smoke_check_tag(smoke)
    assert len(tag) < 256  # fits an AML tag
    rows, record = recorded_request(tag)
    assert rows == smoke["request"]
    check_same_answer({"predictions": [0, 1], "probabilities": [0.1234568, 0.9]}, record, image="img")
    with pytest.raises(SmokeTestError, match=r"expected the predictions .* found \[1, 1\]"):
        check_same_answer({"predictions": [1, 1], "probabilities": [0.1, 0.9]}, record, image="img")
    with pytest.raises(SmokeTestError, match="probabilities"):
        check_same_answer({"predictions": [0, 1], "probabilities": [0.2, 0.9]}, record, image="img")
    assert smoke_check_tag({"rows": 3, "seconds": 1.0}) is None  # a reused image ran no smoke test
    assert recorded_request(None) == (None, None)


def test_images_are_deployed_by_digest_only_and_slots_sit_after_the_stable_port():
    assert image_digest(f"reg.example:5000/m@{DIGEST}") == DIGEST
    for ref in ("reg.example:5000/m:3", "reg.example:5000/m@sha256:abc", f"@{DIGEST}"):
        with pytest.raises(DeploymentError, match="expected a reference by digest"):
            image_digest(ref)
    assert (slot_port(30170, "blue"), slot_port(30170, "green")) == (30171, 30172)


def test_the_default_serving_ports_lie_outside_the_kernels_ephemeral_range():
    """An outgoing connection on the VM takes a local port from this range; a slot port inside it could be
    held by one when a candidate binds it ("Address already in use")."""
    import inspect

    from airflow.dag_processing.dagbag import DagBag

    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    dag = DagBag(dag_folder=str(REPO / "dags" / "edge_deploy.py")).dags["edge_deploy"]
    dag_default = dag.params.get_param("serving_port").value
    operator_default = inspect.signature(EdgeDeployModelOperator.__init__).parameters["serving_port"].default
    assert dag_default == operator_default
    ports = [dag_default, slot_port(dag_default, "blue"), slot_port(dag_default, "green")]
    assert all(not low <= port <= high for port in ports), (ports, (low, high))


def event(version, ts, *, run="r1", name="equipment-failure"):
    """A triggering event as the task runner hands it to a task (Airflow's own model)."""
    import datetime as dt

    from airflow.sdk.api.datamodels._generated import AssetEventDagRunReference, AssetReferenceAssetEventDagRun

    return AssetEventDagRunReference(
        asset=AssetReferenceAssetEventDagRun(name=f"azureml://models/{name}", uri=f"azureml://models/{name}",
                                             extra={}),
        extra={"model_name": name, "model_version": version}, source_task_id="push_image",
        source_dag_id="edge_training", source_run_id=run, source_map_index=-1, source_aliases=[],
        timestamp=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=ts),
        partition_key="2026-11-30T00:00:00",
    )


def test_a_run_deploys_the_param_version_else_the_newest_events():
    params = {"model_name": "equipment-failure", "model_version": None}
    events = {"azureml://models/equipment-failure": [event("4", 1, run="r7"), event("6", 3, run="r9"), event("5", 2)]}
    assert deployment_target(params, events) == {"model_name": "equipment-failure", "model_version": "6",
                                                 "source": "asset event of edge_training/r9"}
    assert deployment_target({**params, "model_version": "2"}, events)["model_version"] == "2"
    with pytest.raises(InvalidInputError, match="expected the model_version param or a model asset event"):
        deployment_target(params, {})


def test_approval_is_asked_only_when_required(monkeypatch):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    asked = []
    monkeypatch.setattr(ApprovalOperator, "execute", lambda self, context: asked.append(self.task_id) or "deferred")
    op = EdgeDeployApprovalOperator(task_id="approve", subject="deploy?", required=False)
    assert op.execute({}) is None and asked == []
    op.required = True
    assert op.execute({}) == "deferred" and asked == ["approve"]
    op.required = "yes"
    with pytest.raises(InvalidInputError):
        op.execute({})


class FakeAML:
    """The AzureMLHook calls the deploy operator makes, over a dict of version -> tags."""

    def __init__(self, versions: dict[str, dict[str, str]]):
        self.versions = versions

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def get_model(self, name, version):
        return SimpleNamespace(version=version, tags=dict(self.versions[str(version)]))

    def list_model_versions(self, name):
        return [SimpleNamespace(version=v, tags=dict(t)) for v, t in sorted(self.versions.items(), reverse=True)]

    def update_model_tags(self, name, version, tags, remove=()):
        merged = {**self.versions[str(version)], **{k: str(v) for k, v in tags.items()}}
        for key in remove:
            merged.pop(key, None)
        self.versions[str(version)] = merged
        return merged


class FakeServing:
    def __init__(self):
        self.deployed = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def deploy(self, **kwargs):
        self.deployed.append(kwargs)
        return {"changed": True, "serving_url": "http://vm:30170", "container": "c", "previous_version": "1"}


@pytest.fixture
def deploy_op(monkeypatch):
    def make(versions, version="2"):
        aml = FakeAML(versions)
        monkeypatch.setattr("edge_training.hooks.azureml.AzureMLHook", lambda **_: aml)
        op = EdgeDeployModelOperator(task_id="deploy_model", model_name="equipment-failure", model_version=version)
        serving = FakeServing()
        op.__dict__["hook"] = serving
        return op, aml, serving
    return make


IMAGE = f"reg.example:5000/equipment-failure@{DIGEST}"


def test_only_a_version_the_gate_let_through_and_whose_image_was_pushed_is_deployed(deploy_op):
    op, _, serving = deploy_op({"2": {"image": IMAGE, "gate_passed": "False"}})
    with pytest.raises(ModelNotDeployableError, match="expected tag gate_passed=True .* found 'False'"):
        op.execute({})
    op, _, serving = deploy_op({"2": {"gate_passed": "True"}})
    with pytest.raises(ModelNotDeployableError, match="expected tag image"):
        op.execute({})
    assert serving.deployed == []


def test_after_a_deploy_the_production_mark_is_on_the_served_version_alone(deploy_op):
    check = smoke_check_tag({"request": [{"a": 1.0}], "predictions": [1], "probabilities": [0.7]})
    op, aml, serving = deploy_op({
        "1": {"image": IMAGE, "gate_passed": "True", "stage": "production", "serving_url": "http://vm:30170"},
        "2": {"image": IMAGE, "gate_passed": "True", "smoke_check": check},
        "3": {"image": IMAGE, "gate_passed": "True"},
    })
    result = op.execute({})
    (call,) = serving.deployed
    assert call["image_ref"] == IMAGE and call["request"] == [{"a": 1.0}] and call["record"]["predictions"] == [1]
    assert aml.versions["2"]["stage"] == "production" and aml.versions["2"]["serving_url"] == "http://vm:30170"
    assert "stage" not in aml.versions["1"] and "retired_at" in aml.versions["1"]
    assert "stage" not in aml.versions["3"]
    assert result["unmarked"] == ["1"] and result["answer_checked"] is True


def test_the_deploy_dag_runs_per_model_asset_partition_and_starts_paused(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import PartitionedAssetTimetable

    from edge_training.assets import model_asset

    monkeypatch.setenv("EDGE_MODEL_NAME", "pump-failure")
    bag = DagBag(dag_folder=str(REPO / "dags" / "edge_deploy.py"))
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.dags["edge_deploy"]
    assert isinstance(dag.timetable, PartitionedAssetTimetable)
    assert dag.timetable.asset_condition == model_asset("pump-failure")
    assert dag.is_paused_upon_creation is True and dag.max_active_runs == 1
    assert [t.task_id for t in dag.topological_sort()] == ["choose_version", "approve", "deploy_model", "summary"]
    training = DagBag(dag_folder=str(REPO / "dags" / "edge_training.py")).dags["edge_training"]
    assert model_asset("pump-failure") in training.get_task("push_image").outlets
