"""Jobs on the AML double, run for real on the edge VM (SSH + docker), driven only through azure-ai-ml.

A private double (own port and state dir) runs these, so the restart test can kill it without disturbing
the shared stack instance; it uses the stack's real VM, docker, Stack Hub and AML storage.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from devstack.aml import bootstrap, config
from devstack.aml.testing import PrivateDouble, free_port, ml_client, running_private_double
from edge_training.hooks.azureml_sdk_private import get_run_details

PARTITION = "azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-10/"
TRAIN = '''\
import glob, json, os, sys
import pandas as pd
from sklearn.linear_model import LogisticRegression
import joblib

data, out = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(data, "part-*.csv")))
frame = pd.concat(pd.read_csv(f) for f in files)
features = ["temperature_c", "vibration_mm_s", "pressure_kpa", "rpm", "runtime_hours"]
model = LogisticRegression(max_iter=500).fit(frame[features], frame["failure"])
accuracy = float(model.score(frame[features], frame["failure"]))
os.makedirs(out, exist_ok=True)
joblib.dump(model, os.path.join(out, "model.joblib"))
json.dump({"rows": len(frame), "files": len(files), "accuracy": accuracy}, open(os.path.join(out, "metrics.json"), "w"))
print("trained on", len(frame), "rows from", len(files), "files; accuracy", round(accuracy, 3))
'''


@pytest.fixture(scope="module")
def double(stack_env, tmp_path_factory):
    with running_private_double(stack_env, tmp_path_factory.mktemp("aml-double-jobs")) as d:
        yield d


@pytest.fixture(scope="module")
def ml(double, stack_env):
    client = ml_client(double, f"AmlDoubleJobs{double.port}")
    assert bootstrap.register(client, stack_env) == 0
    return client


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("train-src")
    (src / "train.py").write_text(TRAIN)
    return src


def job_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(ml, name: str, statuses: set[str], timeout: float = 120) -> tuple[str, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ml.jobs.get(name).status
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in statuses:
            return status, seen
        time.sleep(0.2)
    raise AssertionError(f"job {name} did not reach {statuses} within {timeout}s; saw {seen}")


def containers_for(name: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=azureml.job={name}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def run_details(ml, name: str):
    return get_run_details(ml, name)


def test_training_job_on_stackhub_partition_completes_streams_downloads_and_registers(ml, code_dir, tmp_path):
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import Model

    name = job_name("train")
    job = command(name=name, code=str(code_dir), command="python3 train.py ${{inputs.data}} ${{outputs.model}}",
                  inputs={"data": Input(type="uri_folder", path=PARTITION)},
                  outputs={"model": Output(type="uri_folder")},
                  environment=config.ENVIRONMENT, compute=config.COMPUTE, experiment_name="edge-training")
    created = ml.jobs.create_or_update(job)
    assert created.name == name
    out = io.StringIO()
    with redirect_stdout(out):
        ml.jobs.stream(name)  # follows the job to its end, printing std_log.txt as it grows
    assert "trained on" in out.getvalue() and "rows from" in out.getvalue()
    assert ml.jobs.get(name).status == "Completed", run_details(ml, name).error

    ml.jobs.download(name, download_path=str(tmp_path), output_name="model")
    metrics = json.loads((tmp_path / "named-outputs" / "model" / "metrics.json").read_text())
    assert metrics["files"] >= 1 and metrics["rows"] > 0
    assert (tmp_path / "named-outputs" / "model" / "model.joblib").stat().st_size > 0
    ml.jobs.download(name, download_path=str(tmp_path / "logs"))
    assert "trained on" in (tmp_path / "logs" / "artifacts" / "user_logs" / "std_log.txt").read_text()

    model = ml.models.create_or_update(Model(name=f"edge-model-{name}", path=f"azureml://jobs/{name}/outputs/model",
                                             type="custom_model", tags={"partition": "2026-11-10", "job": name},
                                             properties={"accuracy": str(metrics["accuracy"])}))
    assert model.version == "1"
    got = ml.models.get(model.name, version="1")
    assert got.tags == {"partition": "2026-11-10", "job": name}
    # Like AML, the service stores the job output's resolved datastore path, so models.download works.
    assert got.path.endswith(f"/datastores/workspaceblobstore/paths/azureml/{name}/model/")
    ml.models.download(got.name, got.version, download_path=str(tmp_path / "model"))
    assert sorted(p.name for p in (tmp_path / "model").rglob("*") if p.is_file()) == ["metrics.json",
                                                                                    "model.joblib"]
    assert containers_for(name) == []

    import ssl
    import urllib.request

    studio = ml.jobs.get(name).studio_url  # the SDK appends &tid=... to the service's Studio endpoint
    page = urllib.request.urlopen(studio, context=ssl.create_default_context(cafile=os.environ["EDGE_CA_FILE"]))
    text = page.read().decode()
    assert "Completed" in text and "trained on" in text


def test_same_put_returns_the_existing_job_and_a_changed_spec_is_refused(ml):
    from azure.ai.ml import command
    from azure.core.exceptions import HttpResponseError

    name = job_name("idem")
    spec = dict(name=name, command="echo once", environment=config.ENVIRONMENT, compute=config.COMPUTE)
    first = ml.jobs.create_or_update(command(**spec))
    second = ml.jobs.create_or_update(command(**spec))
    assert second.name == first.name == name
    assert second.creation_context.created_at == first.creation_context.created_at
    assert [j.name for j in ml.jobs.list()].count(name) == 1
    with pytest.raises(HttpResponseError, match="different spec"):
        ml.jobs.create_or_update(command(**{**spec, "command": "echo twice"}))
    status, seen = wait_for(ml, name, {"Completed", "Failed"})
    assert status == "Completed", seen
    order = ["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    third = ml.jobs.create_or_update(command(**spec))  # after completion: still the same job, not a new run
    assert third.status == "Completed"


def test_failing_command_gives_failed_with_error_and_exit_code(ml):
    from azure.ai.ml import command

    name = job_name("fail")
    ml.jobs.create_or_update(command(name=name, command="echo about to fail; echo boom-detail >&2; exit 3",
                                     environment=config.ENVIRONMENT, compute=config.COMPUTE))
    assert wait_for(ml, name, {"Completed", "Failed"})[0] == "Failed"
    error = run_details(ml, name).error.error
    assert "exited with status code 3" in error.message
    assert "boom-detail" in error.message
    assert containers_for(name) == []


def test_cancel_long_job_stops_and_removes_its_container(ml):
    from azure.ai.ml import command

    name = job_name("cancel")
    ml.jobs.create_or_update(command(name=name, command="echo started; sleep 300",
                                     environment=config.ENVIRONMENT, compute=config.COMPUTE))
    wait_for(ml, name, {"Running"}, timeout=60)
    assert containers_for(name) != []
    t0 = time.monotonic()
    ml.jobs.begin_cancel(name).result()
    assert ml.jobs.get(name).status == "Canceled"
    assert time.monotonic() - t0 < 20
    assert containers_for(name) == []


def test_kubernetes_compute_job_fails_with_a_clear_message(ml):
    from azure.ai.ml import command
    from azure.ai.ml.entities import KubernetesCompute

    ml.compute.begin_create_or_update(KubernetesCompute(
        name="edge-arc", namespace="azureml",
        resource_id=f"/subscriptions/{config.SUBSCRIPTION}/resourceGroups/{config.RESOURCE_GROUP}/providers/"
                    "Microsoft.Kubernetes/connectedClusters/edge-arc")).result()
    name = job_name("k8s")
    ml.jobs.create_or_update(command(name=name, command="echo hi", environment=config.ENVIRONMENT,
                                     compute="edge-arc"))
    assert wait_for(ml, name, {"Completed", "Failed"})[0] == "Failed"
    assert "no Kubernetes cluster" in run_details(ml, name).error.error.message


def test_log_is_readable_while_running_and_a_restart_loses_nothing(ml, double):
    from azure.ai.ml import command

    name = job_name("restart")
    ml.jobs.create_or_update(command(
        name=name, command="echo first-line; sleep 4; echo second-line",
        environment=config.ENVIRONMENT, compute=config.COMPUTE))
    wait_for(ml, name, {"Running"}, timeout=60)
    deadline = time.monotonic() + 10
    details = run_details(ml, name)
    while "user_logs/std_log.txt" not in details.log_files and time.monotonic() < deadline:
        time.sleep(0.2)
        details = run_details(ml, name)
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=double.ca_file)
    url = details.log_files["user_logs/std_log.txt"]
    deadline = time.monotonic() + 10
    text = ""
    while "first-line" not in text and time.monotonic() < deadline:
        text = urllib.request.urlopen(url, context=ctx, timeout=5).read().decode()
        time.sleep(0.2)
    assert "first-line" in text and "second-line" not in text
    assert ml.jobs.get(name).status == "Running"

    double.kill()  # a crash mid-job
    double.start()
    status, _ = wait_for(ml, name, {"Completed", "Failed", "Canceled"}, timeout=60)
    assert status == "Completed", run_details(ml, name).error
    url = run_details(ml, name).log_files["user_logs/std_log.txt"]
    text = urllib.request.urlopen(url, context=ctx, timeout=5).read().decode()
    assert "first-line" in text and "second-line" in text
    assert ml.compute.get(config.COMPUTE).type == "virtualmachine"
    assert containers_for(name) == []


def test_missing_partition_fails_naming_the_path(ml):
    from azure.ai.ml import Input, command

    name = job_name("nodata")
    ml.jobs.create_or_update(command(
        name=name, command="ls ${{inputs.data}}", environment=config.ENVIRONMENT, compute=config.COMPUTE,
        inputs={"data": Input(type="uri_folder",
                              path="azureml://datastores/stackhub_data/paths/telemetry/date=1999-01-01/")}))
    assert wait_for(ml, name, {"Completed", "Failed"})[0] == "Failed"
    message = run_details(ml, name).error.error.message
    assert "Resolving inputs failed" in message and "telemetry/date=1999-01-01/" in message


def test_restart_after_the_container_vanished_marks_the_job_failed_with_a_reason(ml, double):
    from azure.ai.ml import command

    name = job_name("vanish")
    ml.jobs.create_or_update(command(name=name, command="sleep 60", environment=config.ENVIRONMENT,
                                     compute=config.COMPUTE))
    wait_for(ml, name, {"Running"}, timeout=60)
    double.kill()
    subprocess.run(["docker", "rm", "-f", f"azureml-{name}"], check=True, capture_output=True)
    double.start()
    assert wait_for(ml, name, {"Completed", "Failed", "Canceled"}, timeout=30)[0] == "Failed"
    assert "without finishing its run" in run_details(ml, name).error.error.message


def test_limits_timeout_stops_the_job_and_fails_it(ml):
    from azure.ai.ml import command

    name = job_name("timeout")
    job = command(name=name, command="echo waiting; sleep 120", environment=config.ENVIRONMENT,
                  compute=config.COMPUTE)
    job.set_limits(timeout=2)
    ml.jobs.create_or_update(job)
    t0 = time.monotonic()
    assert wait_for(ml, name, {"Completed", "Failed", "Canceled"}, timeout=60)[0] == "Failed"
    assert time.monotonic() - t0 < 30
    assert "limits.timeout of 2 s" in run_details(ml, name).error.error.message
    assert containers_for(name) == []


def test_jobs_beyond_the_computes_slots_wait_in_queued(stack_env, tmp_path):
    from azure.ai.ml import command

    d = PrivateDouble(port=free_port(), state_dir=tmp_path / "state", log_file=tmp_path / "double.log",
                      stack_env=stack_env, extra_args=("--max-jobs-per-compute", "1"))
    d.start()
    try:
        client = ml_client(d, f"AmlDoubleSlots{d.port}")
        assert bootstrap.register(client, stack_env) == 0
        first, second = job_name("slot-a"), job_name("slot-b")
        for name in (first, second):
            client.jobs.create_or_update(command(name=name, command="sleep 3", environment=config.ENVIRONMENT,
                                                 compute=config.COMPUTE))
        wait_for(client, first, {"Running"}, timeout=60)
        assert client.jobs.get(second).status == "Queued"
        status, seen = wait_for(client, second, {"Completed", "Failed"}, timeout=90)
        assert status == "Completed" and seen[0] == "Queued"
        assert client.jobs.get(first).status == "Completed"
    finally:
        d.stop()


def vm_path_exists(stack_env, path: str) -> bool:
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(stack_env["EDGE_VM_KNOWN_HOSTS"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(stack_env["EDGE_VM_HOST"], port=int(stack_env["EDGE_VM_PORT"]), username=stack_env["EDGE_VM_USER"],
                   key_filename=stack_env["EDGE_VM_KEY_FILE"], allow_agent=False, look_for_keys=False)
    try:
        _, out, _ = client.exec_command(f"test -e {path} && echo yes || echo no")
        return out.read().decode().strip() == "yes"
    finally:
        client.close()


def test_missing_image_fails_naming_it_and_leaves_nothing_on_the_vm(ml, stack_env):
    from azure.ai.ml import command
    from azure.ai.ml.entities import Environment

    env_name = f"missing-image-{uuid.uuid4().hex[:6]}"
    ml.environments.create_or_update(Environment(name=env_name, version="1", image="no-such-image:1"))
    name = job_name("noimage")
    ml.jobs.create_or_update(command(name=name, command="echo hi", environment=f"{env_name}:1",
                                     compute=config.COMPUTE))
    assert wait_for(ml, name, {"Completed", "Failed"})[0] == "Failed"
    assert "'no-such-image:1' does not exist on the VM's docker" in run_details(ml, name).error.error.message
    assert not vm_path_exists(stack_env, f"azureml-jobs/{name}")
