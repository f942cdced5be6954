"""
### Edge deploy: serve the newest good model on the edge VM, next to the data

Scheduled on the model's asset: every run of `edge_training` that pushes a model image emits an event
(partition key = the training's partition; extra = model, version, image digest), and this DAG runs once
per event (`PartitionedAssetTimetable`). Trigger it by hand with `model_version` to deploy a given
version, or to roll back to an earlier one.

1. **choose_version** - the `model_version` param, else the newest triggering event's version.
2. **approve** - Airflow's human-in-the-loop approval, when the `require_approval` param is on.
3. **deploy_model** - on the edge VM's Docker (`docker_edge`): logs in to the registry with the
   `acr_default` credentials and pulls the image by digest; starts it beside the serving container;
   smoke-tests it (`/health` names the version, a known `/score` request gets the answer the image gave
   when it was built); points the stable address (a proxy on `serving_port`) at it; stops the old one.
   A failed smoke test leaves the old version serving and fails with the reason. Then the version is
   tagged `stage=production` in Azure ML and the tag leaves every other version, so the next gate
   compares against what serves. Only versions the training gate let through (`gate_passed=True`) and
   whose image was pushed are deployed; deploying the version that serves does nothing and says so.
4. **summary** - one JSON line: which version serves, where, and what it replaced.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pendulum

from airflow.sdk import DAG, PartitionedAssetTimetable
from airflow.sdk.definitions.decorators import task
from edge_training.assets import configured_model_name, model_asset
from edge_training.dag_params import form_param
from edge_training.notifications.alerts import EdgeAlertNotifier
from edge_training.operators.edge_deploy import (
    EdgeDeployApprovalOperator,
    EdgeDeployModelOperator,
    deployment_target,
)
from edge_training.operators.retry_policy import EDGE_RETRY_POLICY

MODEL_NAME = configured_model_name()
# The stable address on the VM (a deployment setting): http://<VM>:<port>; the next two ports hold the slots.
# Below Linux's ephemeral range (32768-60999), so an outgoing connection on the VM never holds one of them.
SERVING_PORT = int(os.environ.get("EDGE_SERVING_PORT", "30170"))

with DAG(
    dag_id="edge_deploy",
    description="Serve the model's newest good version on the edge VM; roll back by hand",
    schedule=PartitionedAssetTimetable(assets=model_asset(MODEL_NAME)),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    # One switch at a time on the VM: deploys run in the order their events came.
    max_active_runs=1,
    # Serving a new model at the edge is a decision: the DAG starts paused; unpause it to deploy every
    # model the gate lets through (make demo does).
    is_paused_upon_creation=True,
    default_args={
        "owner": "data-ops",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_policy": EDGE_RETRY_POLICY,
        "on_failure_callback": EdgeAlertNotifier(job_link_tasks=[]),
        "execution_timeout": timedelta(minutes=20),
    },
    doc_md=__doc__,
    tags=["edge", "azureml", "deploy"],
    render_template_as_native_obj=True,
    params={
        "model_name": form_param(
            MODEL_NAME, type="string", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,254}$", description="AML model name."
        ),
        "model_version": form_param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9_.-]{1,128}$",
            description="Version to serve (a deploy or a rollback by hand). Empty: the version named by the "
            "triggering model asset event.",
        ),
        "require_approval": form_param(
            False, type="boolean", description="Ask a person to approve (Airflow's Required actions) first."
        ),
        "serving_port": form_param(
            SERVING_PORT, type="integer", minimum=1, maximum=65533, description="Stable serving port on the edge VM."
        ),
        "proxy_image": form_param(
            os.environ.get("EDGE_BASE_IMAGE", "edge-training-base:bookworm"),
            type="string",
            description="Image on the VM that runs the stable address's proxy.",
        ),
    },
) as dag:

    @task(retries=0)
    def choose_version(params=None, triggering_asset_events=None) -> dict:
        """The param when given, else the newest triggering model asset event's version."""
        target = deployment_target(params, triggering_asset_events)
        print(f"Deploying {target['model_name']}:{target['model_version']} (from the {target['source']})")
        return target

    target = choose_version()

    approve = EdgeDeployApprovalOperator(
        task_id="approve",
        required="{{ params.require_approval }}",
        subject="Deploy {{ ti.xcom_pull(task_ids='choose_version')['model_name'] }} version "
        "{{ ti.xcom_pull(task_ids='choose_version')['model_version'] }} to the edge VM?",
        body="The version's image replaces the one serving on the edge VM, and it becomes the production "
        "model the next training's gate compares with.",
        response_timeout=timedelta(days=2),
        execution_timeout=None,  # the wait is bounded by response_timeout
    )

    deploy_model = EdgeDeployModelOperator(
        task_id="deploy_model",
        model_name=target["model_name"],
        model_version=target["model_version"],
        serving_port="{{ params.serving_port }}",
        proxy_image="{{ params.proxy_image }}",
    )

    @task(trigger_rule="none_failed", retries=0)
    def summary(ti=None) -> dict:
        """Print which version serves and where, as one JSON line (for people and for `make demo`)."""
        result = ti.xcom_pull(task_ids="deploy_model") or {}
        line = {key: result.get(key) for key in (
            "model_name", "model_version", "image", "serving_url", "previous_version", "changed", "unmarked")}
        line["status"] = "serving" if result else "not deployed"
        print("EDGE_DEPLOY_SUMMARY " + json.dumps(line, sort_keys=True))
        return line

    target >> approve >> deploy_model >> summary()
