"""The AML double's control plane, driven only through the real azure-ai-ml SDK (plus raw HTTPS for auth).

Runs against a private double (own port and state dir, same stack storage and CA) so fault injection
never disturbs the shared stack instance.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid

import pytest

from devstack.aml import config
from devstack.aml.testing import ml_client, running_private_double


@pytest.fixture(scope="module")
def double(stack_env, tmp_path_factory):
    with running_private_double(stack_env, tmp_path_factory.mktemp("aml-double-rest")) as d:
        yield d


@pytest.fixture(scope="module")
def ml(double):
    return ml_client(double, f"AmlDoubleRest{double.port}")


def http(double, method: str, path: str, *, token: str | None = None, body: dict | None = None):
    ctx = ssl.create_default_context(cafile=double.ca_file)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(double.endpoint + path, method=method, data=data)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


WS_PATH = (f"/subscriptions/{config.SUBSCRIPTION}/resourceGroups/{config.RESOURCE_GROUP}/providers/"
           f"Microsoft.MachineLearningServices/workspaces/{config.WORKSPACE}")


def test_request_without_bearer_token_is_rejected_and_any_token_accepted(double):
    status, body = http(double, "GET", WS_PATH + "?api-version=2023-08-01-preview")
    assert status == 401, body
    assert "bearer token" in body["error"]["message"]
    status, body = http(double, "GET", WS_PATH + "?api-version=2023-08-01-preview", token="any-token-at-all")
    assert status == 200
    assert body["properties"]["discoveryUrl"] == f"{double.endpoint}/discovery"


def test_service_principal_with_wrong_secret_gets_no_token(double):
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    cred = ClientSecretCredential(config.TENANT, config.CLIENT_ID, "not-the-secret", authority=double.endpoint,
                                  disable_instance_discovery=True, connection_verify=double.ca_file)
    with pytest.raises(ClientAuthenticationError, match="secret is wrong"):
        cred.get_token(double.endpoint + "/.default")
    good = ClientSecretCredential(config.TENANT, config.CLIENT_ID, double.client_secret, authority=double.endpoint,
                                  disable_instance_discovery=True, connection_verify=double.ca_file)
    assert good.get_token(double.endpoint + "/.default").token.count(".") == 2


def test_workspace_and_discovery_document(ml, double):
    ws = ml.workspaces.get(config.WORKSPACE)
    assert ws.name == config.WORKSPACE
    assert ws.discovery_url == f"{double.endpoint}/discovery"
    status, doc = http(double, "GET", "/discovery")
    assert status == 200
    assert doc["history"] == double.endpoint and doc["api"] == double.endpoint


def test_attach_virtualmachine_and_kubernetes_computes(ml, stack_env):
    from azure.ai.ml.entities import KubernetesCompute, VirtualMachineCompute, VirtualMachineSshSettings

    vm = VirtualMachineCompute(
        name="vm-under-test",
        resource_id=f"/subscriptions/{config.SUBSCRIPTION}/resourceGroups/{config.RESOURCE_GROUP}/providers/"
                    "Microsoft.Compute/virtualMachines/edgevm",
        ssh_settings=VirtualMachineSshSettings(admin_username=stack_env["EDGE_VM_USER"],
                                               ssh_port=int(stack_env["EDGE_VM_PORT"]),
                                               ssh_private_key_file=stack_env["EDGE_VM_KEY_FILE"]))
    ml.compute.begin_create_or_update(vm).result()
    got = ml.compute.get("vm-under-test")
    assert got.type == "virtualmachine"
    assert got.ssh_settings.admin_username == stack_env["EDGE_VM_USER"]
    assert got.ssh_settings.ssh_port == int(stack_env["EDGE_VM_PORT"])
    assert got.provisioning_state == "Succeeded"

    k8s = KubernetesCompute(name="arc-under-test", namespace="azureml",
                            resource_id=f"/subscriptions/{config.SUBSCRIPTION}/resourceGroups/"
                                        f"{config.RESOURCE_GROUP}/providers/Microsoft.Kubernetes/"
                                        "connectedClusters/edge-arc")
    ml.compute.begin_create_or_update(k8s).result()
    assert ml.compute.get("arc-under-test").type == "kubernetes"
    names = {c.name: c.type for c in ml.compute.list()}
    assert names["vm-under-test"] == "virtualmachine" and names["arc-under-test"] == "kubernetes"


def test_default_and_stackhub_datastores(ml, stack_env):
    from azure.ai.ml.entities import AccountKeyConfiguration, AzureBlobDatastore

    default = ml.datastores.get_default()
    assert (default.name, default.account_name) == (config.DEFAULT_DATASTORE, config.AML_STORAGE_ACCOUNT)
    assert default.endpoint == config.AML_STORAGE_SUFFIX

    key = dict(p.split("=", 1) for p in stack_env["EDGE_STACKHUB_CONNECTION_STRING"].split(";"))["AccountKey"]
    ml.datastores.create_or_update(AzureBlobDatastore(
        name="stackhub_data", account_name="edgedata", container_name="training",
        endpoint=config.STACKHUB_SUFFIX, credentials=AccountKeyConfiguration(account_key=key)))
    got = ml.datastores.get("stackhub_data")
    assert (got.account_name, got.container_name, got.endpoint) == ("edgedata", "training", config.STACKHUB_SUFFIX)
    # The key is stored but never echoed back by a GET.
    assert key not in json.dumps(got._to_dict())
    assert {"workspaceblobstore", "workspaceartifactstore", "stackhub_data"} <= {d.name for d in ml.datastores.list()}


def test_environment_versions_name_an_image_and_are_immutable(ml):
    from azure.ai.ml.entities import Environment
    from azure.core.exceptions import HttpResponseError

    name = f"env-{uuid.uuid4().hex[:8]}"
    ml.environments.create_or_update(Environment(name=name, version="1", image=config.BASE_IMAGE))
    assert ml.environments.get(name, version="1").image == config.BASE_IMAGE
    ml.environments.create_or_update(Environment(name=name, version="1", image=config.BASE_IMAGE))  # same: fine
    with pytest.raises(HttpResponseError, match="immutable"):
        ml.environments.create_or_update(Environment(name=name, version="1", image="other:tag"))


def test_model_versions_auto_increment_round_trip_and_archive(ml):
    from azure.ai.ml.entities import Model

    name = f"model-{uuid.uuid4().hex[:8]}"
    first = ml.models.create_or_update(Model(name=name, path="azureml://jobs/job-a/outputs/model",
                                             type="custom_model", tags={"partition": "2026-11-10"},
                                             properties={"auc": "0.91"}, description="first"))
    second = ml.models.create_or_update(Model(name=name, path="azureml://jobs/job-b/outputs/model",
                                              type="custom_model", tags={"partition": "2026-11-11"}))
    assert (first.version, second.version) == ("1", "2")
    got = ml.models.get(name, version="1")
    assert got.tags == {"partition": "2026-11-10"}
    assert got.properties["auc"] == "0.91"
    assert got.path == "azureml://jobs/job-a/outputs/model"
    assert got.description == "first"
    assert sorted(m.version for m in ml.models.list(name)) == ["1", "2"]
    assert ml.models.get(name, label="latest").version == "2"

    ml.models.archive(name, version="1")
    assert [m.version for m in ml.models.list(name)] == ["2"]
    from azure.ai.ml.constants import ListViewType

    archived = ml.models.list(name, list_view_type=ListViewType.ARCHIVED_ONLY)
    assert [m.version for m in archived] == ["1"]
    assert name in {m.name for m in ml.models.list()}


def test_code_snapshot_upload_is_reused_by_content_hash(ml, tmp_path):
    from azure.ai.ml.entities._assets import Code
    from azure.storage.blob import BlobServiceClient

    src = tmp_path / "snapshot"
    src.mkdir()
    (src / "train.py").write_text(f"print('snapshot {uuid.uuid4()}')\n")
    first = ml._code.create_or_update(Code(path=str(src)))
    again = ml._code.create_or_update(Code(path=str(src)))
    assert (again.name, again.version) == (first.name, first.version)
    # The bytes went to the AML storage account through the SAS the double handed out.
    container, prefix = first.path.split(":47102/", 1)[1].split("/", 1)
    import os

    blobs = BlobServiceClient.from_connection_string(
        os.environ["EDGE_AMLSTORE_CONNECTION_STRING"], connection_verify=os.environ["EDGE_CA_FILE"]
    ).get_container_client(container).list_blobs(name_starts_with=prefix)
    assert f"{prefix}/train.py" in {b.name for b in blobs}


def test_injected_429_is_retried_by_the_sdk_and_counted(ml, double):
    from azure.ai.ml.entities import Model

    name = f"faulted-{uuid.uuid4().hex[:8]}"
    ml.models.create_or_update(Model(name=name, version="1", path="azureml://jobs/j/outputs/model",
                                     type="custom_model"))
    assert http(double, "DELETE", "/_admin/requests")[0] == 200
    status, _ = http(double, "POST", "/_admin/faults",
                     body={"route": "GET model version", "kind": "429", "count": 2, "retry_after": 0.2})
    assert status == 201
    try:
        assert ml.models.get(name, version="1").version == "1"
    finally:
        http(double, "DELETE", "/_admin/faults")
    _, requests = http(double, "GET", "/_admin/requests")
    assert requests["counts"]["GET model version"] == 3
    assert [r["status"] for r in requests["recent"] if r["route"] == "GET model version"] == [429, 429, 200]


def test_injected_503_share_and_delay(ml, double):
    import time

    http(double, "DELETE", "/_admin/requests")
    http(double, "POST", "/_admin/faults", body={"route": "GET workspace", "kind": "503", "count": 1,
                                                 "retry_after": 0.1})
    http(double, "POST", "/_admin/faults", body={"route": r"GET .*/computes$", "kind": "delay", "delay": 1.0,
                                                 "count": 1})
    try:
        assert ml.workspaces.get(config.WORKSPACE).name == config.WORKSPACE
        t0 = time.monotonic()
        list(ml.compute.list())
        assert time.monotonic() - t0 >= 1.0
    finally:
        http(double, "DELETE", "/_admin/faults")
    _, requests = http(double, "GET", "/_admin/requests")
    assert requests["counts"]["GET workspace"] == 2
    assert requests["counts"]["GET computes"] == 1
    status, body = http(double, "POST", "/_admin/faults", body={"route": "GET job", "kind": "418"})
    assert status == 400 and "fault kind" in body["error"]["message"]


def test_studio_pages_for_model_versions_and_unknown_jobs(ml, double):
    import ssl
    import urllib.request

    from azure.ai.ml.entities import Model

    name = f"studio-{uuid.uuid4().hex[:8]}"
    ml.models.create_or_update(Model(name=name, version="3", path="azureml://jobs/j/outputs/model",
                                     type="custom_model", tags={"partition": "2026-11-10"}))
    ctx = ssl.create_default_context(cafile=double.ca_file)
    page = urllib.request.urlopen(f"{double.endpoint}/studio/models/{name}/versions/3", context=ctx).read().decode()
    assert "azureml://jobs/j/outputs/model" in page and "2026-11-10" in page
    page = urllib.request.urlopen(f"{double.endpoint}/model/{name}:3/details?wsid=x", context=ctx).read().decode()
    assert "azureml://jobs/j/outputs/model" in page  # AML studio's own model URL shape
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{double.endpoint}/studio/jobs/no-such-job", context=ctx)
    assert err.value.code == 404
