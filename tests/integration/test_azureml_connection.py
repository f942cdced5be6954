"""The azureml connection against the AML double: the UI's Test button, and a wrong secret."""

from __future__ import annotations

import json
import os

from edge_training.hooks.azureml import AzureMLHook


def test_connection_test_reads_the_workspace(stack_env):
    before = os.environ.get("AZUREML_CURRENT_CLOUD")
    ok, message = AzureMLHook(azureml_conn_id="azureml_default").test_connection()
    assert ok, message
    assert stack_env["EDGE_AML_WORKSPACE"] in message
    # The SDK's process-wide cloud setting is put back once the hook is closed.
    assert os.environ.get("AZUREML_CURRENT_CLOUD") == before


def test_wrong_secret_fails_clearly_without_echoing_it(stack_env, monkeypatch):
    conn = json.loads(stack_env["AIRFLOW_CONN_AZUREML_DEFAULT"])
    conn["extra"]["client_secret"] = "definitely-wrong-secret-value"
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_WRONG", json.dumps(conn))
    ok, message = AzureMLHook(azureml_conn_id="azureml_wrong").test_connection()
    assert not ok
    assert "definitely-wrong-secret-value" not in message
    assert "ClientAuthenticationError" in message or "invalid_client" in message
