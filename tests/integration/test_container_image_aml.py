"""The whole image path with the AML double: include/training/train.py runs as a real AML job on the
edge VM (in the base image), the model is registered, the build operator downloads the job's model
output through the AML hook, and the push operator writes the image reference back to the model."""

from __future__ import annotations

import shutil
import uuid

import docker
import pytest
from airflow.sdk import DAG
from airflow.sdk.execution_time.context import OutletEventAccessors
from azureml_support import make_context, unique_fingerprint

from edge_training.hooks.azureml import AzureMLHook
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.operators.azureml import AzureMLRegisterModelOperator, AzureMLSubmitJobOperator
from edge_training.operators.container_image import ModelImageBuildOperator, ModelImagePushOperator
from tests.integration.model_fixtures import TRAINING_DIR, registry_digest, remove_local_images, write_partition

PARTITION = "2026-11-10T02:00:00"


@pytest.fixture(scope="module")
def client(stack_env) -> docker.DockerClient:
    return docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")


@pytest.fixture(scope="module")
def model_name(client, stack_env):
    name = f"it-amlimage-{uuid.uuid4().hex[:8]}"
    yield name
    remove_local_images(client, stack_env["EDGE_REGISTRY"], [name])


def test_trained_registered_built_pushed_and_written_back(stack_env, tmp_path, model_name):
    # The job's code snapshot: the real training script plus a partition to train on.
    code = tmp_path / "code"
    shutil.copytree(TRAINING_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    write_partition(code / "data", rows=800, parts=2, seed=5, token="aml")
    fingerprint = unique_fingerprint()
    with DAG(dag_id="image_it_aml", schedule=None) as dag:
        submit = AzureMLSubmitJobOperator(
            task_id="submit_training", code=str(code),
            command="python3 train.py --data data --output ${{outputs.model}}",
            environment=stack_env["EDGE_AML_ENVIRONMENT"], compute=stack_env["EDGE_AML_COMPUTE"],
            partition=PARTITION, data_fingerprint=fingerprint, outputs={"model": None}, deferrable=False,
            poll_policy=PollPolicy(initial_s=0.5, factor=1.5, max_s=2.0),
        )
        register = AzureMLRegisterModelOperator(
            task_id="register_model", job_name="{{ job }}", model_name=model_name, partition=PARTITION,
            data_fingerprint=fingerprint, git_commit="0123abc", training_environment=stack_env["EDGE_AML_ENVIRONMENT"],
        )
    submit_context = make_context(dag, partition=PARTITION)
    submit.render_template_fields(submit_context)  # as the task runner does: AML's ${{...}} survive Jinja
    job_name = submit.execute(submit_context)["job_name"]
    register.job_name = job_name
    context = make_context(dag, partition=PARTITION)
    context["outlet_events"] = OutletEventAccessors()
    model = register.execute(context)

    build = ModelImageBuildOperator(
        task_id="build_image", model_name=model_name, model_version=model["version"], data_fingerprint=fingerprint,
        job_name=job_name, partition=PARTITION, azureml_conn_id="azureml_default",
        base_image=stack_env["EDGE_BASE_IMAGE"], registry_ca_bundle=stack_env["EDGE_REGISTRY_CA_FILE"],
        smoke_rows=[{"temperature_c": 96.0, "vibration_mm_s": 9.0, "pressure_kpa": 101.0, "rpm": 1500.0,
                     "runtime_hours": 19000.0}],
    ).execute({})
    assert build["reused"] is False and build["smoke_test"]["rows"] == 1

    ti = make_context(dag, partition=PARTITION)["ti"]
    pushed = ModelImagePushOperator(
        task_id="push_image", build_result=build, registry_ca_bundle=stack_env["EDGE_REGISTRY_CA_FILE"],
        azureml_conn_id="azureml_default",
    ).execute({"ti": ti})
    assert registry_digest(stack_env, model_name, str(model["version"])) == pushed["digest"]
    assert registry_digest(stack_env, model_name, f"fp-{fingerprint[:12]}") == pushed["digest"]

    with AzureMLHook() as aml:
        tags = aml.get_model(model_name, model["version"]).tags
    assert tags["image"] == pushed["image"]
    assert tags["job_name"] == job_name
