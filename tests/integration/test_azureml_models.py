"""Quality gate, model registration and model tags against the AML double with the real SDK."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import DownstreamTasksSkipped
from airflow.sdk.execution_time.context import OutletEventAccessors
from azureml_support import execute_task, make_context, unique_fingerprint

from edge_training.hooks.azureml import AzureMLHook
from edge_training.hooks.azureml_naming import build_job_name
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.links.azureml import AzureMLModelLink
from edge_training.assets import model_asset
from edge_training.operators.azureml import (
    AzureMLRegisterModelOperator,
    AzureMLSubmitJobOperator,
)
from edge_training.operators.gate import EvaluateGateOperator

FAST = PollPolicy(initial_s=0.5, factor=1.5, max_s=2.0)
PARTITION = "2026-11-12T02:00:00"

# A stand-in for include/training/train.py with metrics the test chooses: writes a model file and
# metrics.json to the model output, like the real script does.
MODEL_JOB = textwrap.dedent(
    """\
    import json, pathlib, sys
    out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
    (out / "model.joblib").write_bytes(b"not really a model")
    (out / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "roc_auc": float(sys.argv[2]),
                                                  "rows_train": 80, "rows_test": 20}))
    print("wrote model with roc_auc", sys.argv[2], flush=True)
    """
)


def train(tmp_path: Path, roc_auc: float) -> str:
    """Run a job that writes a model output with the given ROC AUC; return its name."""
    code = tmp_path / f"code-{roc_auc}"
    code.mkdir()
    (code / "make_model.py").write_text(MODEL_JOB)
    fingerprint = unique_fingerprint()
    with DAG(dag_id="aml_it_models", schedule=None) as dag:
        op = AzureMLSubmitJobOperator(
            task_id="submit_training", code=str(code), command=f"python3 make_model.py ${{{{outputs.model}}}} {roc_auc}",
            environment=os.environ["EDGE_AML_ENVIRONMENT"], compute=os.environ["EDGE_AML_COMPUTE"],
            partition=PARTITION, data_fingerprint=fingerprint, outputs={"model": None}, deferrable=False,
            poll_policy=FAST,
        )
    result = execute_task(op, make_context(dag, partition=PARTITION))
    assert result["job_name"] == build_job_name("aml_it_models", PARTITION, fingerprint)
    return result["job_name"]


@pytest.fixture
def hook(stack_env):
    with AzureMLHook() as h:
        yield h


def pipeline(model_name: str, job_name: str, tolerance: float = 0.02):
    with DAG(dag_id="aml_it_models", schedule=None) as dag:
        gate = EvaluateGateOperator(task_id="evaluate_gate", job_name=job_name, model_name=model_name,
                                    tolerance=tolerance)
        register = AzureMLRegisterModelOperator(
            task_id="register_model", job_name=job_name, model_name=model_name, partition=PARTITION,
            data_fingerprint="fp-" + job_name[-16:], git_commit="0123abc", training_environment="edge-training-base:1",
        )
        gate >> register
    return dag, gate, register


def register_context(dag, register):
    context = make_context(dag, partition=PARTITION)
    context["outlet_events"] = OutletEventAccessors()
    return context


@pytest.fixture(scope="module")
def first_model(stack_env, tmp_path_factory):
    """A fresh model name with one version registered through the gate, as the DAG does it."""
    model_name = f"it-model-{uuid.uuid4().hex[:8]}"
    job = train(tmp_path_factory.mktemp("first"), 0.91)
    dag, gate, register = pipeline(model_name, job)
    decision = execute_task(gate, make_context(dag, partition=PARTITION))
    context = register_context(dag, register)
    result = execute_task(register, context)
    return {"model_name": model_name, "job": job, "decision": decision, "result": result, "context": context,
            "dag": dag, "register": register}


def test_first_model_passes_the_gate_and_registers_once_with_lineage_tags(hook, first_model):
    model_name, job, first = first_model["model_name"], first_model["job"], first_model["result"]
    decision = first_model["decision"]
    assert decision["passed"] and decision["reason"] == "no production model yet"
    assert decision["new_value"] == 0.91

    assert first["created"] is True and first["name"] == model_name
    model = hook.get_model(model_name, first["version"])
    tags = model.tags
    assert tags["job_name"] == job and tags["partition"] == PARTITION and tags["dag_id"] == "aml_it_models"
    assert tags["git_commit"] == "0123abc" and tags["training_environment"] == "edge-training-base:1"
    assert tags["run_id"] == f"manual__{PARTITION}" and tags["data_fingerprint"].startswith("fp-")
    assert json.loads(tags["metrics"]) == {"accuracy": 0.9, "roc_auc": 0.91, "rows_train": 80, "rows_test": 20}
    assert job in str(model.path)
    context = first_model["context"]
    assert context["ti"].xcom[AzureMLModelLink.key] == first["studio_url"]
    assert f"{model_name}:{first['version']}" in first["studio_url"]

    event = context["outlet_events"][model_asset(model_name)]
    assert event.extra["model_version"] == first["version"] and event.extra["partition"] == PARTITION
    assert event.partition_keys == {PARTITION}

    # A retry or re-run returns the same version and registers nothing.
    register = first_model["register"]
    again = execute_task(register, register_context(first_model["dag"], register))
    assert again["version"] == first["version"] and again["created"] is False
    assert [m.version for m in hook.list_model_versions(model_name)] == [first["version"]]


def test_gate_skips_registration_for_a_worse_model(tmp_path, hook, first_model):
    model_name = first_model["model_name"]
    production_version = first_model["result"]["version"]
    hook.update_model_tags(model_name, production_version, {"stage": "production"})

    worse = train(tmp_path, 0.80)
    dag, gate, register = pipeline(model_name, worse, tolerance=0.02)
    context = make_context(dag, partition=PARTITION)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        execute_task(gate, context)
    assert skipped.value.tasks == ["register_model"]
    decision = context["ti"].xcom["return_value"]
    assert decision["passed"] is False and decision["baseline_version"] == production_version
    assert "worse than version" in decision["reason"]

    # Within tolerance the same baseline lets a model through.
    close = train(tmp_path, 0.90)
    dag, gate, _ = pipeline(model_name, close, tolerance=0.02)
    assert execute_task(gate, make_context(dag, partition=PARTITION))["passed"] is True


def test_update_model_tags_merges(hook, first_model):
    model_name, version = first_model["model_name"], first_model["result"]["version"]
    before = dict(hook.get_model(model_name, version).tags)
    ref = "edgeacr.azsacr.local.azurestack.external:47150/it-model@sha256:" + "0" * 64
    tags = hook.update_model_tags(model_name, version, {"image": ref})
    assert tags["image"] == ref
    after = hook.get_model(model_name, version).tags
    assert after == {**before, "image": ref}
