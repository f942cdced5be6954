"""Pure logic of the AML double: job planning (reference substitution, input/output resolution, refusals),
fault selection and job-spec comparison. No services: the store is a SQLite file in tmp_path."""

from __future__ import annotations

import pytest

from devstack.aml import config
from devstack.aml.http_core import Faults, HttpError
from devstack.aml.metadata_store import Store
from devstack.aml.routes_jobs import comparable
from devstack.aml.runner import JobError, JobRunner

B = (f"/subscriptions/{config.SUBSCRIPTION}/resourceGroups/{config.RESOURCE_GROUP}/providers/"
     f"Microsoft.MachineLearningServices/workspaces/{config.WORKSPACE}")


@pytest.fixture
def store(tmp_path):
    s = Store(path=tmp_path / "aml.sqlite")
    vm = {"properties": {
        "computeType": "VirtualMachine",
        "resourceId": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/virtualMachines/edgevm",
        "properties": {"sshPort": 47122, "administratorAccount": {"username": "edgeops", "privateKeyData": "KEY"}}}}
    s.put_asset("compute", "edge-vm", vm)
    s.put_asset("compute", "arc", {"properties": {"computeType": "Kubernetes"}})
    s.put_asset("environment", "base", {"properties": {"image": "edge-training-base:bookworm"}}, "1")
    stores = (("stackhub_data", "edgedata", "training", "local.azurestack.external:47101"),
              (config.DEFAULT_DATASTORE, "amlworkspace", "azureml-blobstore", "local.azurestack.external:47102"),
              (config.ARTIFACT_DATASTORE, "amlworkspace", "azureml", "local.azurestack.external:47102"))
    for name, account, container, suffix in stores:
        s.put_asset("datastore", name, {"properties": {
            "datastoreType": "AzureBlob", "accountName": account, "containerName": container, "endpoint": suffix,
            "protocol": "https", "credentials": {"credentialsType": "AccountKey", "secrets": {"key": "a2V5"}}}})
    return s


def runner(store, tmp_path):
    return JobRunner(store=store, state_dir=tmp_path, storage=None, known_hosts=None, ca_file=None)


def job(store, name, **spec):
    base = {"jobType": "Command", "computeId": f"{B}/computes/edge-vm",
            "environmentId": f"{B}/environments/base/versions/1", "command": "true"}
    store.create_job(name, {**base, **spec}, "NotStarted", {})


def test_plan_substitutes_inputs_outputs_and_literals(store, tmp_path):
    job(store, "j", command="python3 train.py --data ${{inputs.data}} --epochs ${{ inputs.epochs }} "
                            "--out ${{outputs.model}} --prev ${{inputs.prev}}",
        inputs={"data": {"jobInputType": "uri_folder",
                         "uri": "azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-10/"},
                "epochs": {"jobInputType": "literal", "value": "3"},
                "prev": {"jobInputType": "uri_folder", "uri": "azureml://jobs/old-job/outputs/model"}},
        outputs={"model": {"jobOutputType": "uri_folder"}})
    plan = runner(store, tmp_path).plan("j")
    assert plan["command"] == ("python3 train.py --data /azureml-job/inputs/data --epochs 3 "
                               "--out /azureml-job/outputs/model --prev /azureml-job/inputs/prev")
    data = plan["inputs"]["data"]
    assert (data["account"], data["container"], data["path"]) == ("edgedata", "training", "telemetry/date=2026-11-10/")
    assert data["endpoint"] == "https://edgedata.blob.local.azurestack.external:47101"
    assert plan["inputs"]["prev"]["path"] == "azureml/old-job/model/"
    assert plan["outputs"]["model"]["path"] == "azureml/j/model/"
    assert plan["outputs"]["model"]["container"] == "azureml-blobstore"
    assert plan["ssh"] == {"host": "edgevm.local.azurestack.external", "port": 47122, "user": "edgeops",
                           "key": "KEY", "password": None}
    assert plan["image"] == "edge-training-base:bookworm"
    assert plan["env"]["AZUREML_RUN_ID"] == "j"


def test_plan_refuses_undeclared_references_kubernetes_and_unknown_datastores(store, tmp_path):
    job(store, "undeclared", command="echo ${{inputs.missing}}")
    with pytest.raises(JobError, match=r"\$\{\{inputs.missing\}\}"):
        runner(store, tmp_path).plan("undeclared")
    job(store, "k8s", computeId=f"{B}/computes/arc")
    with pytest.raises(JobError, match="no Kubernetes cluster"):
        runner(store, tmp_path).plan("k8s")
    job(store, "nods", inputs={"d": {"jobInputType": "uri_folder", "uri": "azureml://datastores/nope/paths/x/"}})
    with pytest.raises(JobError, match="datastore 'nope' is not registered"):
        runner(store, tmp_path).plan("nods")
    job(store, "https", inputs={"d": {"jobInputType": "uri_folder", "uri": "https://example.invalid/x"}})
    with pytest.raises(JobError, match="azureml://datastores"):
        runner(store, tmp_path).plan("https")


def test_faults_respect_count_share_and_route_patterns():
    faults = Faults()
    faults.add({"route": "GET job", "kind": "429", "count": 2})
    faults.add({"route": r"PUT .*/models/", "kind": "500", "share": 0.0})
    assert faults.pick("GET job", "GET", "/x/jobs/a").kind == "429"
    assert faults.pick("GET job", "GET", "/x/jobs/a").kind == "429"
    assert faults.pick("GET job", "GET", "/x/jobs/a") is None
    assert faults.pick("PUT model version", "PUT", "/x/models/m/versions/1") is None
    assert faults.counts["GET job"] == 3
    scoped = faults.add({"route": "PUT model version", "kind": "503", "body": r'"partition": ?"2026-11-15"'})
    assert faults.pick("PUT model version", "PUT", "/x/models/m/versions/2",
                       b'{"properties": {"tags": {"partition": "2026-11-16"}}}') is None
    assert faults.pick("PUT model version", "PUT", "/x/models/m/versions/2",
                       b'{"properties": {"tags": {"partition": "2026-11-15"}}}') is scoped
    with pytest.raises(HttpError):
        faults.add({"route": "GET job", "kind": "404"})


def test_job_spec_comparison_ignores_empty_values_and_key_order():
    assert comparable({"a": {}, "b": [1], "c": None}) == {"b": [1]}
    assert comparable({"x": {"b": 1, "a": 2}}) == comparable({"x": {"a": 2, "b": 1}})
    assert comparable({"inputs": {}}) is None


def test_limits_timeout_durations():
    from devstack.aml.runner import parse_duration

    assert parse_duration("PT1M30S") == 90
    assert parse_duration("PT2H") == 7200
    assert parse_duration("P1DT0.5S") == 86400.5
    assert parse_duration(None) is None
    with pytest.raises(JobError, match="ISO 8601"):
        parse_duration("90 seconds")
