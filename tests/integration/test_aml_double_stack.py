"""The stack's own AML double (started by `make stack-up`): healthy, wired into stack.env, and bootstrapped
with the edge VM compute, the stackhub_data datastore and the base-image environment (read through azure-ai-ml).
"""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest

from devstack.aml import config


@pytest.fixture(scope="module")
def ml(stack_env):
    from devstack.aml.bootstrap import ml_client_from_connection

    return ml_client_from_connection(stack_env["AIRFLOW_CONN_AZUREML_DEFAULT"])


def test_stack_env_carries_the_aml_connection_and_variables(stack_env):
    extra = json.loads(stack_env["AIRFLOW_CONN_AZUREML_DEFAULT"])["extra"]
    assert json.loads(stack_env["AIRFLOW_CONN_AZUREML_DEFAULT"])["conn_type"] == "azureml"
    assert extra["cloud"] == "custom" and set(extra["cloud_metadata"]) == {
        "azure_portal", "resource_manager", "active_directory", "aml_resource_id", "storage_endpoint",
        "registry_discovery_endpoint"}
    assert stack_env["EDGE_AML_ENDPOINT"] == config.ENDPOINT == extra["cloud_metadata"]["resource_manager"].rstrip("/")
    assert (stack_env["EDGE_AML_SUBSCRIPTION"], stack_env["EDGE_AML_RESOURCE_GROUP"], stack_env["EDGE_AML_WORKSPACE"]) \
        == (extra["subscription_id"], extra["resource_group"], extra["workspace_name"])
    assert stack_env["EDGE_AML_COMPUTE"] == "edge-vm"
    assert stack_env["EDGE_AML_ENVIRONMENT"] == "edge-training-base:1"
    assert extra["ca_bundle"] == stack_env["EDGE_AML_CA_FILE"]


def test_healthz_answers_without_a_token(stack_env):
    ctx = ssl.create_default_context(cafile=stack_env["EDGE_AML_CA_FILE"])
    with urllib.request.urlopen(stack_env["EDGE_AML_ENDPOINT"] + "/healthz", context=ctx, timeout=5) as resp:
        assert json.loads(resp.read())["status"] == "ok"


def test_fresh_stack_is_ready_for_a_job(ml, stack_env):
    compute = ml.compute.get(stack_env["EDGE_AML_COMPUTE"])
    assert compute.type == "virtualmachine"
    assert compute.ssh_settings.admin_username == stack_env["EDGE_VM_USER"]
    assert compute.ssh_settings.ssh_port == int(stack_env["EDGE_VM_PORT"])

    data = ml.datastores.get("stackhub_data")
    assert (data.account_name, data.container_name) == (stack_env["EDGE_STACKHUB_ACCOUNT"],
                                                        stack_env["EDGE_STACKHUB_CONTAINER"])
    assert data.endpoint == config.STACKHUB_SUFFIX
    default = ml.datastores.get_default()
    assert default.account_name == "amlworkspace"

    name, version = stack_env["EDGE_AML_ENVIRONMENT"].split(":")
    assert ml.environments.get(name, version=version).image == stack_env["EDGE_BASE_IMAGE"]


def test_plain_sdk_example_script_attaches_submits_streams_downloads_and_registers(stack_env):
    """devstack/aml/example.py: the issue's "done when", on the shared stack instance."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    # azure-ai-ml leaves AZUREML_CURRENT_CLOUD=<custom cloud> in os.environ; a child process that inherits it
    # fails at `import azure.ai.ml` (it does not know that cloud yet), so a fresh script must not inherit it.
    env = {k: v for k, v in {**os.environ, **stack_env}.items() if k != "AZUREML_CURRENT_CLOUD"}
    script = repo / "devstack" / "aml" / "example.py"
    proc = subprocess.run([sys.executable, str(script), "--partition", "2026-11-11"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "attached edge-vm" in out
    assert "trained on" in out  # streamed from the job's std_log.txt
    assert "downloaded ['metrics.json', 'model.joblib']" in out
    assert "registered edge-example-model version" in out and "'partition': '2026-11-11'" in out
