"""
### Edge training: one Azure ML training per daily data partition, next to the data

Training data stays on premises in Azure Stack Hub blob storage. Each run of this DAG takes one daily
partition (`telemetry/date=YYYY-MM-DD/` in the `training` container), and:

1. **check_edge_vm** - over SSH (pinned host key): Docker answers, the training image is there, disk,
   memory, clock skew, the VM reaches the Stack Hub blob endpoint, sshd posture.
2. **validate_partition** - the partition (each day of a training window) is in the Stack Hub domain
   (locality policy), complete (`_SUCCESS`, no empty file), has the expected columns; fingerprinted from
   listings; a manifest is written beside the data.
3. **submit_training** - an Azure ML command job on the attached edge compute; deferrable: the
   triggerer waits and streams the job's log into this task's log. The job name derives from the
   partition and the data fingerprint, so retries, clears and re-run backfills reuse the same job.
4. **evaluate_gate** - compares the new metrics with the current production model; a worse model
   skips registration (a skip, not a failure).
5. **register_model** - registers the job's model output as a version with lineage tags
   (partition, fingerprint, job, run, git commit, metrics, gate_passed).
6. **build_image** / **push_image** - builds the scoring image with the model, smoke-tests it, pushes
   it to the registry and verifies the digest; the image reference and the smoke test's request and
   answer go back onto the model version, and the model asset event (model, version, image digest,
   with the partition key) schedules `edge_deploy`, which serves it on the edge VM.
7. **summary** - one JSON line: partition, job, model, image, status, durations.

Runs are keyed by partition (`CronPartitionTimetable`: the run at 00:00 UTC trains the day that just
ended; its key is that day, `2026-11-10T00:00:00`).
Backfill historical partitions with
`airflow backfill create --dag-id edge_training --from-date 2026-11-01 --to-date 2026-11-07`.
Trigger one partition by hand with the `partition` param (`YYYY-MM-DD`).

Training windows: with the `window_days` param N, a run trains on the N daily partitions ending at its own
(`{"window_days": 7}` keyed 2026-11-10 reads 2026-11-04 to 2026-11-10). Each day is validated; a missing or
incomplete day fails the run, naming it, unless `min_days` allows the gap (gaps are named in the log and in
the model's `missing_days` tag). The job gets one input per day, the fingerprint covers the days used, and
the job's and the model's tags and the image's labels name them (`data_days`).

Lineage: with the Airflow OpenLineage provider configured, the tasks' events name the partition (with its
fingerprint) as the input, and the model version and the image (by digest) as the outputs; the AML job gets
the submitting task's OpenLineage run as `OPENLINEAGE_PARENT_*` variables.

Failures: refused credentials and invalid requests fail a task at once; throttling and transient service
errors are retried with exponential backoff (`edge_training.operators.retry_policy`). A task that fails for
good is reported to `EDGE_ALERT_TARGET` (the log, a webhook or email) with the partition, the task, the
error and the links.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pendulum

from airflow.sdk import DAG, AssetAlias, CronPartitionTimetable

# `task` from the module airflow.sdk takes it from: the dag-processor imports the Airflow modules a DAG
# file names once, in its long-lived parent (`parsing_pre_import_modules`), and the decorator's own
# imports (the standard provider's PythonOperator, `packaging`) were about a third of every parse of this
# file. bench/overhead.py measures the parse; tests/unit/test_dag_parse_imports.py keeps it so.
from airflow.sdk.definitions.decorators import task
from edge_training.assets import configured_model_name, model_asset
from edge_training.dag_params import form_param
from edge_training.hooks.azureml_polling import PollPolicy, poll_max_seconds
from edge_training.operators.azureml import AzureMLRegisterModelOperator, AzureMLSubmitJobOperator
from edge_training.operators.container_image import ModelImageBuildOperator, ModelImagePushOperator
from edge_training.operators.edge_vm import EdgeVMReadinessOperator
from edge_training.operators.gate import EvaluateGateOperator
from edge_training.operators.retry_policy import EDGE_RETRY_POLICY
from edge_training.operators.stackhub_blob import StackHubPartitionOperator
from edge_training.partitions import partition_date_str
from edge_training.pool_order import EDGE_VM_POOL
from edge_training.windows import MAX_WINDOW_DAYS, data_args
from edge_training.lineage import git_commit
from edge_training.notifications.alerts import AlertTarget, EdgeAlertNotifier, run_deadline
from edge_training.run_cleanup import CancelJobsLeftRunning

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TRAINING_CODE = str(PROJECT_ROOT / "include" / "training")
SERVING_CONTEXT = str(PROJECT_ROOT / "include" / "serving")

# The partition this run trains: the `partition` param when given (manual runs), else the run's key.
PARTITION = "{{ edge_partition(params.partition or partition_key) }}"
# The model this deployment trains (a deployment setting, read when the DAG is parsed): the default of
# the model_name param, and the asset edge_deploy schedules on. A run given another model_name
# updates that model's asset through MODEL_ALIAS instead (alias events carry no partition key).
MODEL_NAME = configured_model_name()
MODEL_ASSET = model_asset(MODEL_NAME)
MODEL_ALIAS = AssetAlias("edge_training_model")
# How long submit_training may take, waiting included (a deployment setting, read when the DAG is parsed).
TRAINING_TASK_TIMEOUT = timedelta(minutes=float(os.environ.get("EDGE_TRAINING_TASK_TIMEOUT_MINUTES", "180")))
# The last partition day the timetable starts a run for on its own (a deployment setting, ISO date; empty:
# no end). Triggers and backfills are not limited by it: the demo's and the tests' Airflow set it so that
# only the runs they ask for (and the deploys those runs' model events start) run.
SCHEDULE_END = os.environ.get("EDGE_TRAINING_SCHEDULE_END") or None
# How long submit_training's wait may go without looking at a running job, in seconds (a deployment
# setting): a finished job is noticed within this, and a quiet job costs 60 / this status calls a minute.
AML_POLL_MAX_SECONDS = poll_max_seconds(os.environ.get("EDGE_AML_POLL_MAX_SECONDS"))
# Runs of this DAG active at once (a deployment setting). The trainings on the VM stay bounded by the
# edge_vm pool whatever this is; more runs only let their other tasks proceed meanwhile.
MAX_ACTIVE_RUNS = int(os.environ.get("EDGE_TRAINING_MAX_ACTIVE_RUNS", "4"))
# A run still unfinished this long after it was queued is reported (a deployment setting; 0: no deadline).
# Off, and refused when set, on Airflow 3.3.2: a queued-at deadline breaks clearing the run's tasks
# (see edge_training.notifications.alerts.run_deadline).
RUN_DEADLINE_MINUTES = float(os.environ.get("EDGE_RUN_DEADLINE_MINUTES", "0"))
# Where alerts go (EDGE_ALERT_TARGET, read when one is sent); checked here so that a typo is an import
# error in the UI rather than an alert lost at the first failure.
AlertTarget.from_env()
# Tells whoever watches the trainings: a task failed for good, or a run is late. Both alerts carry the
# AML job link that submit_training pushes.
ALERTS = EdgeAlertNotifier(job_link_tasks=["submit_training"])
FEATURES = ["temperature_c", "vibration_mm_s", "pressure_kpa", "rpm", "runtime_hours"]
EXPECTED_COLUMNS = ["device_id", "timestamp", *FEATURES, "failure"]

default_args = {
    "owner": "data-ops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,  # doubling from 30 s, with Airflow's jitter (3.x takes a multiplier)
    "max_retry_delay": timedelta(minutes=10),
    # Refused credentials and invalid requests fail at once; throttling and transient errors back off.
    "retry_policy": EDGE_RETRY_POLICY,
    "on_failure_callback": ALERTS,
    "execution_timeout": timedelta(minutes=30),
    # The connections every task uses, given once; an operator takes those it has an argument for.
    "ssh_conn_id": "edge_vm_ssh",
    "stackhub_conn_id": "stackhub_blob",
    "azureml_conn_id": "azureml_default",
    "docker_conn_id": "docker_edge",
    "registry_conn_id": "acr_default",
}

with DAG(
    dag_id="edge_training",
    description="Train on the edge VM next to the Stack Hub data, register the model, push its image",
    # Midnight ticks keep `backfill --from-date A --to-date B` inclusive of both days.
    schedule=CronPartitionTimetable("0 0 * * *", timezone="UTC", run_offset=-1),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    end_date=pendulum.parse(SCHEDULE_END).in_timezone("UTC") if SCHEDULE_END else None,
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    max_active_tasks=8,
    dagrun_timeout=timedelta(hours=4),
    deadline=run_deadline(RUN_DEADLINE_MINUTES, job_link_tasks=["submit_training"]),
    # A failed run cancels the AML job its ended training left running (a trigger no triggerer had
    # started yet when the task was marked failed never hears of it).
    on_failure_callback=CancelJobsLeftRunning(task_ids=["submit_training"]),
    default_args=default_args,
    doc_md=__doc__,
    tags=["edge", "azureml", "stack-hub", "training"],
    user_defined_macros={"edge_partition": partition_date_str, "git_commit": git_commit, "aml_data_args": data_args},
    # Templates render to Python objects: a flag param arrives as a bool, a number as a number, and the
    # operators refuse text where those belong. Values between tasks travel as task outputs (.output).
    render_template_as_native_obj=True,
    params={
        "partition": form_param(
            None,
            type=["null", "string"],
            format="date",
            description="Partition date to train (YYYY-MM-DD). Empty: the run's own partition key.",
        ),
        "window_days": form_param(
            1,
            type="integer",
            minimum=1,
            maximum=MAX_WINDOW_DAYS,
            description="Train on this many daily partitions, ending at the run's own (1: that day alone).",
        ),
        "min_days": form_param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=MAX_WINDOW_DAYS,
            description="Days of the window that must be usable; the others may be missing or incomplete "
            "(named in the log and the model's tags). Empty: every day of the window.",
        ),
        "force_retrain": form_param(
            False,
            type="boolean",
            description="Submit a new AML job even if a completed one exists for this partition and data.",
        ),
        "model_name": form_param(
            MODEL_NAME,
            type="string",
            # Starts with a letter, so a native render keeps it text (never a number).
            pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,254}$",
            description="AML model name; also the image repository in the registry.",
        ),
        "primary_metric": form_param("roc_auc", type="string", description="Metric the gate compares."),
        "gate_tolerance": form_param(
            0.02, type="number", minimum=0, description="How much worse than production is still accepted."
        ),
        "min_disk_gib": form_param(2.0, type="number", minimum=0, description="Free disk needed on the VM."),
        "min_memory_gib": form_param(1.0, type="number", minimum=0, description="Free memory needed on the VM."),
        "max_clock_skew_s": form_param(60, type="integer", minimum=0, description="Allowed VM clock skew."),
        "require_gpu": form_param(False, type="boolean", description="Fail unless the VM has a GPU."),
        "environment": form_param(
            os.environ.get("EDGE_AML_ENVIRONMENT", "edge-training-base:1"),
            type="string",
            description="AML environment (name:version) the job runs in.",
        ),
        "environment_image": form_param(
            os.environ.get("EDGE_BASE_IMAGE", "edge-training-base:bookworm"),
            type="string",
            description="Docker image of that environment; must be on the VM. Also the serving base image.",
        ),
        "compute": form_param(
            os.environ.get("EDGE_AML_COMPUTE", "edge-vm"),
            type="string",
            description="AML compute attached for the edge (virtualmachine or kubernetes).",
        ),
        "job_timeout_minutes": form_param(120, type="integer", minimum=1, description="Cancel the job after this."),
        "min_training_seconds": form_param(
            0,
            type="integer",
            minimum=0,
            description="The training job keeps running until this many seconds have passed (train.py "
            "--min-seconds): a training of known length, for benchmarks. 0: off.",
        ),
        "wait_in_triggerer": form_param(
            True,
            type="boolean",
            description="Wait for the AML job in the triggerer (frees the worker slot). False waits in the "
            "worker, for a deployment without a triggerer.",
        ),
    },
) as dag:
    check_edge_vm = EdgeVMReadinessOperator(
        task_id="check_edge_vm",
        image="{{ params.environment_image }}",
        min_disk_gib="{{ params.min_disk_gib }}",
        min_memory_gib="{{ params.min_memory_gib }}",
        max_clock_skew_s="{{ params.max_clock_skew_s }}",
        require_gpu="{{ params.require_gpu }}",
        execution_timeout=timedelta(minutes=5),
    )

    validate_partition = StackHubPartitionOperator(
        task_id="validate_partition",
        multiple_outputs=True,  # each key of its result is also an XCom: .output["key"]
        container="training",
        prefix="telemetry/date={partition_date}/",
        partition_key="{{ params.partition or partition_key }}",
        expected_columns=EXPECTED_COLUMNS,
        datastore="stackhub_data",
        window_days="{{ params.window_days }}",
        min_days="{{ params.min_days }}",
        execution_timeout=timedelta(minutes=10),
    )

    submit_training = AzureMLSubmitJobOperator(
        task_id="submit_training",
        multiple_outputs=True,  # each key of its result is also an XCom: .output["key"]
        code=TRAINING_CODE,
        # AML's own ${{...}} placeholders, kept away from Jinja; one --data per day of the window.
        command=(
            "python3 train.py{{ aml_data_args(ti.xcom_pull(task_ids='validate_partition', key='job_inputs')) }}"
            "{% raw %} --output ${{outputs.model}} --label failure{% endraw %}"
            "{% if params.min_training_seconds %} --min-seconds {{ params.min_training_seconds }}{% endif %}"
        ),
        environment="{{ params.environment }}",
        compute="{{ params.compute }}",
        experiment_name="edge-training",
        partition=PARTITION,
        data_fingerprint=validate_partition.output["fingerprint"],
        inputs=validate_partition.output["job_inputs"],
        outputs={"model": {"type": "uri_folder"}},
        tags={
            "dag_id": "{{ dag.dag_id }}",
            "run_id": "{{ run_id }}",
            "partition": PARTITION,
            "data_fingerprint": validate_partition.output["fingerprint"],
            "data_days": validate_partition.output["data_days"],
            "missing_days": validate_partition.output["missing_days"],
            "git_commit": "{{ git_commit() }}",
        },
        force_new_job="{{ params.force_retrain }}",
        job_timeout="{{ params.job_timeout_minutes * 60 }}",
        pool=EDGE_VM_POOL,
        poll_policy=PollPolicy(initial_s=min(PollPolicy.initial_s, AML_POLL_MAX_SECONDS), max_s=AML_POLL_MAX_SECONDS),
        deferrable="{{ params.wait_in_triggerer }}",
        # Also bounds the time spent deferred: the operator hands it to the trigger, which cancels the job.
        execution_timeout=TRAINING_TASK_TIMEOUT,
    )

    evaluate_gate = EvaluateGateOperator(
        task_id="evaluate_gate",
        job_name=submit_training.output["job_name"],
        model_name="{{ params.model_name }}",
        primary_metric="{{ params.primary_metric }}",
        tolerance="{{ params.gate_tolerance }}",
    )

    register_model = AzureMLRegisterModelOperator(
        task_id="register_model",
        multiple_outputs=True,  # each key of its result is also an XCom: .output["key"]
        job_name=submit_training.output["job_name"],
        model_name="{{ params.model_name }}",
        partition=PARTITION,
        data_fingerprint=validate_partition.output["fingerprint"],
        git_commit="{{ git_commit() }}",
        training_environment="{{ params.environment }}",
        # The partition the model was trained on: the input of this task's lineage (OpenLineage provider).
        training_data=validate_partition.output,
        # Read by edge_deploy, which deploys only versions the gate let through.
        # data_days / missing_days: exactly the days the model learnt from, and the window's gaps.
        extra_tags={
            "gate_passed": "{{ (ti.xcom_pull(task_ids='evaluate_gate') or {}).get('passed') }}",
            "data_days": validate_partition.output["data_days"],
            "missing_days": validate_partition.output["missing_days"],
        },
        # Two runs of one partition (a manual run beside a backfill) must not both register: with one
        # slot, the look-up by job tag and the registration happen as one step.
        pool="edge_model_registry",
    )

    build_image = ModelImageBuildOperator(
        task_id="build_image",
        serving_dir=SERVING_CONTEXT,
        model_name="{{ params.model_name }}",
        model_version=register_model.output["version"],
        job_name=submit_training.output["job_name"],
        partition=PARTITION,
        data_fingerprint=validate_partition.output["fingerprint"],
        data_days=validate_partition.output["data_days"],
        git_commit="{{ git_commit() }}",
        base_image="{{ params.environment_image }}",
        execution_timeout=timedelta(minutes=20),
    )

    push_image = ModelImagePushOperator(
        task_id="push_image",
        build_result=build_image.output,
        execution_timeout=timedelta(minutes=20),
        # The model is shippable once its image is in the registry: the event (partition key, model,
        # version, image digest) schedules edge_deploy.
        outlets=[MODEL_ASSET, MODEL_ALIAS],
    )

    @task(trigger_rule="none_failed", retries=0)
    def summary(ti=None, dag_run=None, params=None) -> dict:
        """Print the run's outcome as one JSON line, for people and for `make demo`."""
        partition = ti.xcom_pull(task_ids="validate_partition") or {}
        job = ti.xcom_pull(task_ids="submit_training") or {}
        gate = ti.xcom_pull(task_ids="evaluate_gate") or {}
        model = ti.xcom_pull(task_ids="register_model") or {}
        image = ti.xcom_pull(task_ids="push_image") or {}
        started = dag_run.start_date
        status = "success" if image.get("image") else ("gated" if gate.get("passed") is False else "incomplete")
        line = {
            "partition": partition.get("partition_date"),
            "data_fingerprint": partition.get("fingerprint"),
            "aml_job": job.get("job_name"),
            "aml_job_status": job.get("status"),
            "model": f"{model['name']}:{model['version']}" if model.get("version") else None,
            "image": image.get("image"),
            "status": status,
            "gate": gate,
            "durations_s": {
                "training_job": job.get("duration_s"),
                "run_so_far": round((pendulum.now("UTC") - started).total_seconds(), 1) if started else None,
            },
        }
        print("EDGE_TRAINING_SUMMARY " + json.dumps(line, sort_keys=True))
        return line

    (
        check_edge_vm
        >> validate_partition
        >> submit_training
        >> evaluate_gate
        >> register_model
        >> build_image
        >> push_image
        >> summary()
    )
