"""OpenLineage for the training runs, without the stack.

- The pure builders (``edge_training.openlineage_facets``) turn each operator's result into exactly the
  datasets the runs report: the Stack Hub partition in (with its fingerprint), the AML model version and
  the image (by digest) out.
- Each operator's ``get_openlineage_facets_on_complete``, on a task-instance-like object holding its
  XCom (as the provider calls it on a fresh operator) and right after its own execute.
- The AML job's ``OPENLINEAGE_PARENT_*`` variables: the provider's ids of the submitting task's run;
  absent when the provider is disabled; a retry re-attaches to the job by name, and a job another run
  submitted meanwhile (with its own run's ids) is followed, not refused.
- Through Airflow's own task runner (``inprocess_airflow``) with the provider's listener and its file
  transport: the events of one run's validate_partition, register_model and push_image name exactly
  the three datasets.
- ``[openlineage] disabled``: the provider's plugin gives a worker no listener and no macros.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from edge_training.hooks.stackhub_fingerprint import FINGERPRINT_VERSION
from tests.unit import test_azureml_operators_fake_hook as aml
from tests.unit import test_operators_fake_hooks as fakes
from tests.unit.inprocess_airflow import InMemoryExecutionAPI
from tests.unit.test_azureml_operators_fake_hook import workspace  # noqa: F401 - a fixture
from tests.unit.test_operators_fake_hooks import images, storage  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
ACCOUNT_HOST = "edgedata.blob.local.azurestack.external"
FP = "3f083a304da5ffb6" + "0" * 48
SUMMARY = {
    "account_host": ACCOUNT_HOST,
    "container": "training",
    "prefix": "telemetry/date=2026-11-20/",
    "file_count": 3,
    "bytes": 48213,
    "fingerprint": FP,
    "data_uri": "azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-20/",
    "partition_date": "2026-11-20",
    "manifest": "telemetry/date=2026-11-20/_manifest.json",
}
WORKSPACE_URI = "azureml://subscriptions/sub-1/resourcegroups/edge-rg/workspaces/edge-ws"
MODEL_RESULT = {
    "name": "equipment-failure", "version": "7", "uri": "azureml://models/equipment-failure/versions/7",
    "workspace": WORKSPACE_URI, "job_name": "edge_training-2026-11-20-3f083a304da5ffb6",
    "studio_url": "https://ml.azure.com/model/equipment-failure:7/details", "created": True,
}
REGISTRY = "edgeacr.azsacr.local.azurestack.external:47150"
DIGEST = "sha256:" + "a9" * 32
PUSH_RESULT = {
    "image": f"{REGISTRY}/equipment-failure@{DIGEST}",
    "tags": [f"{REGISTRY}/equipment-failure:7", f"{REGISTRY}/equipment-failure:fp-3f083a304da5"],
    "digest": DIGEST, "reused": False,
}
PARTITION_DS = ("wasbs://training@edgedata.blob.local.azurestack.external", "telemetry/date=2026-11-20")
MODEL_DS = (WORKSPACE_URI, "models/equipment-failure/versions/7")
IMAGE_DS = (f"oci://{REGISTRY}", f"equipment-failure@{DIGEST}")


def as_dict(dataset: Any) -> dict[str, Any]:
    """A dataset as the transport writes it, without the producer (the client's or the provider's)."""
    from openlineage.client.serde import Serde

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "_producer"}
        return value

    return strip(json.loads(Serde.to_json(dataset)))


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


class TaskInstance:
    """What the provider hands get_openlineage_facets_on_complete: a task instance whose XCom holds the result."""

    def __init__(self, task_id: str, result: Any) -> None:
        self.task_id, self.result, self.pulls = task_id, result, []

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        self.pulls.append((task_ids, key))
        return self.result if (task_ids, key) == (self.task_id, "return_value") else None


# --- the builders ------------------------------------------------------------------------------------
def test_a_training_window_names_each_of_its_days_as_an_input_of_validation_and_of_the_model():
    from edge_training.openlineage_facets import model_version_lineage, partition_lineage
    from edge_training.windows import combine_window

    days = [{**SUMMARY, "prefix": f"telemetry/date={d}/", "partition_date": d, "fingerprint": f"{i}" * 64,
             "data_uri": f"azureml://datastores/stackhub_data/paths/telemetry/date={d}/"}
            for i, d in enumerate(["2026-11-18", "2026-11-19", "2026-11-20"])]
    window = combine_window(days, [], own_day="2026-11-20", window_days=3, min_days=3)
    expected = [(PARTITION_DS[0], f"telemetry/date={d}") for d in ("2026-11-18", "2026-11-19", "2026-11-20")]
    for lineage in (partition_lineage(window), model_version_lineage(MODEL_RESULT, training_data=window)):
        assert [(d.namespace, d.name) for d in lineage.inputs] == expected
        assert [d.facets["version"].datasetVersion for d in lineage.inputs] == [p["fingerprint"] for p in days]


def test_the_partition_is_an_input_named_by_container_account_and_folder_with_its_fingerprint():
    from edge_training.openlineage_facets import partition_lineage

    lineage = partition_lineage(SUMMARY)

    assert lineage.outputs == [] and len(lineage.inputs) == 1
    schema_version = "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/"
    assert as_dict(lineage.inputs[0]) == {
        "namespace": PARTITION_DS[0],
        "name": PARTITION_DS[1],
        "facets": {
            "version": {"_schemaURL": schema_version + "DatasetVersionDatasetFacet", "datasetVersion": FP},
            "edgeTraining_partition": {
                "_schemaURL": "urn:edge-training:openlineage:PartitionDatasetFacet:1-0-0",
                "fingerprint": FP, "fingerprintFormat": FINGERPRINT_VERSION, "partitionDate": "2026-11-20",
                "fileCount": 3, "sizeBytes": 48213, "manifest": SUMMARY["manifest"], "dataUri": SUMMARY["data_uri"],
            },
        },
        "inputFacets": {},
    }


def test_the_model_version_is_an_output_in_its_workspace_and_the_partition_its_input():
    from edge_training.openlineage_facets import model_version_lineage

    lineage = model_version_lineage(MODEL_RESULT, training_data=SUMMARY)

    assert names(lineage.outputs) == [MODEL_DS] and names(lineage.inputs) == [PARTITION_DS]
    facets = as_dict(lineage.outputs[0])["facets"]
    assert facets["version"]["datasetVersion"] == "7" and facets["datasetType"]["datasetType"] == "MODEL"
    assert lineage.inputs[0].facets["version"].datasetVersion == FP
    # Without the partition, the model version alone.
    alone = model_version_lineage(MODEL_RESULT)
    assert names(alone.outputs) == [MODEL_DS] and alone.inputs == []


def test_the_image_is_an_output_named_by_registry_repository_and_digest():
    from edge_training.openlineage_facets import image_lineage, image_name

    lineage = image_lineage(PUSH_RESULT)

    assert lineage.inputs == [] and names(lineage.outputs) == [IMAGE_DS]
    assert lineage.outputs[0].facets["version"].datasetVersion == DIGEST
    # A nested repository stays whole; the registry is the reference's first component.
    nested = {"image": f"{REGISTRY}/edge/models/equipment-failure@{DIGEST}", "digest": DIGEST}
    assert image_name(nested) == (f"oci://{REGISTRY}", f"edge/models/equipment-failure@{DIGEST}")
    with pytest.raises(ValueError, match="expected <registry>/<repository>@sha256:"):
        image_name({"image": f"{REGISTRY}/equipment-failure:7", "digest": DIGEST})


def test_a_task_without_a_result_reports_no_dataset():
    from edge_training.openlineage_facets import image_lineage, model_version_lineage, partition_lineage

    for lineage in (partition_lineage(None), model_version_lineage(None), image_lineage(None)):
        assert (lineage.inputs, lineage.outputs) == ([], [])


# --- the operators, as the provider calls them -------------------------------------------------------
def test_each_operator_reports_its_datasets_from_its_xcom():
    from edge_training.operators.azureml import AzureMLRegisterModelOperator
    from edge_training.operators.container_image import ModelImagePushOperator
    from edge_training.operators.stackhub_blob import StackHubPartitionOperator

    validate = StackHubPartitionOperator(task_id="validate_partition", prefix="telemetry/")
    register = AzureMLRegisterModelOperator(
        task_id="register_model", job_name="j", model_name="equipment-failure", partition="2026-11-20",
        data_fingerprint=FP, git_commit="c0ffee", training_environment="edge-training-base:1",
        training_data=SUMMARY,
    )
    push = ModelImagePushOperator(task_id="push_image", build_result={})

    ti = TaskInstance("validate_partition", SUMMARY)
    assert names(validate.get_openlineage_facets_on_complete(ti).inputs) == [PARTITION_DS]
    assert ti.pulls == [("validate_partition", "return_value")]
    lineage = register.get_openlineage_facets_on_complete(TaskInstance("register_model", MODEL_RESULT))
    assert (names(lineage.inputs), names(lineage.outputs)) == ([PARTITION_DS], [MODEL_DS])
    assert names(push.get_openlineage_facets_on_complete(TaskInstance("push_image", PUSH_RESULT)).outputs) == [
        IMAGE_DS]
    # A try that failed before its result: an event without datasets, not an error.
    empty = validate.get_openlineage_facets_on_complete(TaskInstance("validate_partition", None))
    assert (empty.inputs, empty.outputs) == ([], [])


def test_the_partition_operator_reports_the_partition_it_validated(storage):  # noqa: F811
    fakes.write_partition(storage)
    op = fakes.partition_op()
    summary = fakes.run(op, fakes.partition_context())

    lineage = op.get_openlineage_facets_on_complete(TaskInstance("validate_partition", None))  # no XCom read

    assert names(lineage.inputs) == [(f"wasbs://{fakes.CONTAINER}@{fakes.BLOB_HOST}", "telemetry/date=2026-11-10")]
    assert lineage.inputs[0].facets["edgeTraining_partition"].fingerprint == summary["fingerprint"]


def test_the_register_operator_reports_its_version_in_the_connections_workspace(workspace):  # noqa: F811
    aml.completed_training_job(workspace)
    op = aml.register_operator(training_data=SUMMARY)
    result = op.execute(aml.make_context(op))

    assert result["workspace"] == aml.WORKSPACE_URI
    lineage = op.get_openlineage_facets_on_complete(TaskInstance("register_model", None))
    assert names(lineage.outputs) == [(aml.WORKSPACE_URI, f"models/{aml.MODEL}/versions/{result['version']}")]
    assert names(lineage.inputs) == [PARTITION_DS]


def test_the_register_operator_refuses_training_data_it_cannot_name(workspace):  # noqa: F811
    from edge_training.exceptions import OperatorArgumentError

    aml.completed_training_job(workspace)
    op = aml.register_operator(training_data={"container": "training", "prefix": "telemetry/"})
    with pytest.raises(OperatorArgumentError, match=r"training_data.*missing \['account_host', 'fingerprint'\]"):
        op.execute(aml.make_context(op))
    assert aml.MODEL not in workspace.models


def test_the_push_operator_reports_the_image_it_pushed(images, tmp_path):  # noqa: F811
    built = fakes.run(fakes.build_op(fakes.model_folder(tmp_path)), fakes.make_context())
    op = fakes.push_op(built)
    out = fakes.run(op, fakes.make_context())

    lineage = op.get_openlineage_facets_on_complete(TaskInstance("push_image", None))
    assert names(lineage.outputs) == [(f"oci://{fakes.REGISTRY}", f"{fakes.MODEL}@{out['digest']}")]


# --- the AML job's parent ----------------------------------------------------------------------------
def _clear_openlineage_conf() -> None:
    """The provider caches its settings per process; tests change them."""
    from airflow.providers.openlineage import conf

    for value in vars(conf).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()


@pytest.fixture
def openlineage_on(tmp_path):
    """The provider enabled (a file transport under tmp_path) and its settings read afresh."""
    from airflow.sdk.listener import get_listener_manager

    get_listener_manager()  # the worker's plugins load first, with the provider as configured before the test
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT",
                  json.dumps({"type": "file", "log_file_path": str(tmp_path / "ol" / "event"), "append": False}))
        mp.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "edge-tests")
        mp.setenv("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD", "True")
        mp.delenv("AIRFLOW__OPENLINEAGE__DISABLED", raising=False)
        (tmp_path / "ol").mkdir()
        _clear_openlineage_conf()
        try:
            yield mp, tmp_path / "ol"
        finally:
            _clear_openlineage_conf()
    _clear_openlineage_conf()


class OpenLineageTI(aml.FakeTI):
    """The fake task instance, with what the provider's macros read: its DAG run (no logical date, as
    in a partitioned run) through the template context."""

    def __init__(self, *, try_number: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.try_number = try_number
        self.dag_run = SimpleNamespace(
            dag_id=self.dag_id, run_id=self.run_id, logical_date=None, clear_number=0, conf={},
            run_after=datetime(2026, 11, 21, 0, 0, tzinfo=timezone.utc), partition_key=aml.PARTITION,
        )

    def get_template_context(self) -> dict[str, Any]:
        return {"dag_run": self.dag_run}


def submit_context(op: Any, *, try_number: int = 1, store: Any = None) -> dict[str, Any]:
    ctx = aml.make_context(op, store=store)
    ti = OpenLineageTI(dag_id=op.dag_id, task_id=op.task_id, run_id=aml.RUN_ID, start_date=aml.utcnow(),
                       try_number=try_number)
    ctx["ti"] = ctx["task_instance"] = ti
    return ctx


def expected_parent_env(try_number: int = 1) -> dict[str, str]:
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    run_after = datetime(2026, 11, 21, 0, 0, tzinfo=timezone.utc)
    run_id = OpenLineageAdapter.build_task_instance_run_id(
        dag_id=aml.DAG_ID, task_id="submit_training", try_number=try_number, logical_date=run_after, map_index=-1)
    dag_run_id = OpenLineageAdapter.build_dag_run_id(dag_id=aml.DAG_ID, logical_date=run_after, clear_number=0)
    return {
        "OPENLINEAGE_PARENT_ID": f"edge-tests/{aml.DAG_ID}.submit_training/{run_id}",
        "OPENLINEAGE_PARENT_JOB_NAMESPACE": "edge-tests",
        "OPENLINEAGE_PARENT_JOB_NAME": f"{aml.DAG_ID}.submit_training",
        "OPENLINEAGE_PARENT_RUN_ID": run_id,
        "OPENLINEAGE_ROOT_PARENT_ID": f"edge-tests/{aml.DAG_ID}/{dag_run_id}",
    }


def test_a_new_job_gets_the_submitting_task_runs_openlineage_ids(workspace, openlineage_on):  # noqa: F811
    op = aml.submit_operator(
        environment_variables={"MLFLOW_TRACKING_URI": "azureml://x", "OPENLINEAGE_PARENT_ID": "mine"})
    aml.expect_deferral(op, submit_context(op))

    env = workspace.jobs[aml.job_name()].spec["environment_variables"]
    expected = expected_parent_env()
    # The DAG's own variables win over the lineage ones.
    assert env == {**expected, "MLFLOW_TRACKING_URI": "azureml://x", "OPENLINEAGE_PARENT_ID": "mine"}
    # The job's name, so its identity and reuse, does not depend on them.
    assert list(workspace.jobs) == [aml.job_name()]


@pytest.mark.parametrize("setting", [{"AIRFLOW__OPENLINEAGE__DISABLED": "true"}, {}])
def test_without_openlineage_the_job_gets_no_lineage_variables(workspace, openlineage_on, setting):  # noqa: F811
    mp, _ = openlineage_on
    if not setting:  # no transport configured: the provider disables itself
        mp.delenv("AIRFLOW__OPENLINEAGE__TRANSPORT")
    for key, value in setting.items():
        mp.setenv(key, value)
    _clear_openlineage_conf()
    op = aml.submit_operator(environment_variables={"A": "1"})
    aml.expect_deferral(op, submit_context(op))

    assert workspace.jobs[aml.job_name()].spec["environment_variables"] == {"A": "1"}


def test_a_retry_follows_the_job_its_first_try_submitted_with_that_trys_ids(workspace, openlineage_on):  # noqa: F811
    store = aml.FakeTaskStateStore()
    first = aml.submit_operator()
    aml.expect_deferral(first, submit_context(first, store=store))
    retry = aml.submit_operator()
    try:  # the job has moved on meanwhile: the retry defers on it, or takes its result
        followed = retry.execute(submit_context(retry, try_number=2, store=store))["job_name"]
    except TaskDeferred as deferred:
        followed = deferred.trigger.job_name

    assert followed == aml.job_name()
    assert workspace.submit_calls == [aml.job_name()]  # the retry submitted nothing
    assert workspace.jobs[aml.job_name()].spec["environment_variables"] == expected_parent_env(try_number=1)


def test_a_job_another_run_submitted_meanwhile_is_followed_not_refused(workspace, openlineage_on):  # noqa: F811
    """A manual run beside a backfill: both look, find no job, submit. AML refuses the second spec (its
    run's tags and lineage ids differ) with 409; the loser follows the winner's job."""
    name = aml.job_name()
    looked = workspace.read

    def read(job: str) -> Any:
        found = looked(job)
        if found is None and job == name:  # the other run's submission lands right after this look
            workspace.add_job(name, status="Running", tags={"run_id": aml.RERUN_ID})
        return found

    workspace.read = read
    op = aml.submit_operator()
    deferred = aml.expect_deferral(op, submit_context(op))

    assert deferred.trigger.job_name == name
    assert list(workspace.jobs) == [name] and workspace.jobs[name].tags == {"run_id": aml.RERUN_ID}


class _Refusal:
    """The parts of an azure-core response an HttpResponseError reads."""

    def __init__(self, status: int) -> None:
        self.status_code, self.reason, self.headers, self.content_type = status, "", {}, "application/json"

    def text(self, encoding: str | None = None) -> str:
        return ""

    def body(self) -> bytes:
        return b""


@pytest.mark.parametrize("status", [409, 400])
@pytest.mark.parametrize("job_exists", [True, False])
def test_the_hook_names_a_refused_submission_of_a_taken_name(status, job_exists):
    """The real hook on an SDK client whose PUT is refused: while a job of the name exists, that is the
    name being taken (AzureMLJobExistsError, which the operator follows); otherwise the SDK's own error."""
    from airflow.sdk import Connection
    from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

    from edge_training.exceptions import AzureMLJobExistsError
    from edge_training.hooks.azureml import AzureMLHook, CommandJobSpec

    error_type = ResourceExistsError if status == 409 else HttpResponseError
    existing = SimpleNamespace(name="job-1", status="Running", studio_url=None, experiment_name="e", tags={},
                               outputs={}, creation_context=None)

    def put(job: Any) -> Any:
        raise error_type(message="Job 'job-1' already exists with a different spec", response=_Refusal(status))

    def get(name: str) -> Any:
        if not job_exists:
            raise ResourceNotFoundError(message=f"{name} not found")
        return existing

    hook = AzureMLHook(connection=Connection(conn_id="azureml_default", conn_type="azureml", extra=json.dumps(
        {"subscription_id": "sub", "resource_group": "rg", "workspace_name": "ws", "cloud": "public",
         "auth_type": "managed_identity"})))
    hook._client = SimpleNamespace(jobs=SimpleNamespace(create_or_update=put, get=get))
    spec = CommandJobSpec(command="python3 train.py", environment="env:1", compute="edge-vm")
    expected = AzureMLJobExistsError if job_exists else error_type
    with pytest.raises(expected) as raised:
        hook.submit_command_job("job-1", spec)
    assert type(raised.value) is expected
    if job_exists:
        assert f"'job-1' already exists in workspace 'ws' with another spec (HTTP {status})" in str(raised.value)
    hook._client = None


def test_the_parent_ids_are_the_ids_of_the_tasks_own_events(workspace, openlineage_on):  # noqa: F811
    """The run id the job gets is the one the provider's listener puts on the task's events."""
    from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter

    from edge_training.openlineage_facets import parent_run_env

    op = aml.submit_operator()
    ti = OpenLineageTI(dag_id=op.dag_id, task_id=op.task_id, run_id=aml.RUN_ID, start_date=aml.utcnow(),
                       try_number=3)
    env = parent_run_env(ti, op)
    # What the listener computes for the task's START/COMPLETE events (logical date, else run_after).
    listener_run_id = OpenLineageAdapter.build_task_instance_run_id(
        dag_id=ti.dag_id, task_id=ti.task_id, try_number=3, logical_date=ti.dag_run.run_after, map_index=-1)
    assert env["OPENLINEAGE_PARENT_RUN_ID"] == listener_run_id
    assert env["OPENLINEAGE_PARENT_ID"].split("/") == ["edge-tests", f"{aml.DAG_ID}.submit_training", listener_run_id]


# --- one run through Airflow's task runner, with the provider's listener and file transport ----------
DAG_COLUMNS_HEADER = "device_id,timestamp,temperature_c,vibration_mm_s,pressure_kpa,rpm,runtime_hours,failure"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["edge_training"]


@pytest.fixture
def openlineage_listener(openlineage_on):
    """The provider's listener in this process's listener manager (as the plugin adds it in a worker)."""
    from airflow.providers.openlineage.plugins.listener import OpenLineageListener
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()
    listener = OpenLineageListener()
    manager.add_listener(listener)
    try:
        yield openlineage_on[1]
    finally:
        manager.pm.unregister(listener)


def events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(folder.iterdir())]


def test_one_runs_events_name_exactly_the_partition_the_model_version_and_the_image(
    dag, storage, workspace, images, openlineage_listener, tmp_path, monkeypatch  # noqa: F811
):
    # The partition on the (fake) Stack Hub account, in the DAG's columns; the connections the DAG names.
    for i, part in enumerate(fakes.PARTS):
        storage.put(f"telemetry/date=2026-11-10/{part}", fakes.csv_part(i, rows=40, header=DAG_COLUMNS_HEADER))
    storage.put("telemetry/date=2026-11-10/_SUCCESS", b"")
    fakes.stackhub_conn(monkeypatch, "stackhub_blob")
    fakes.set_conn(monkeypatch, "docker_edge", conn_type="generic", host="unix:///var/run/docker.sock")
    fakes.set_conn(monkeypatch, "acr_default", conn_type="azure_container_registry", host=fakes.REGISTRY,
                   login=fakes.REG_USER, password=fakes.REG_PASSWORD)
    aml.completed_training_job(workspace)
    built = fakes.run(fakes.build_op(fakes.model_folder(tmp_path)), fakes.make_context())
    push = dag.get_task("push_image")
    monkeypatch.setattr(push, "azureml_conn_id", None)  # the model's image tag: not this test's concern

    api = InMemoryExecutionAPI(dag_id="edge_training", run_id="manual__2026-11-10", partition_key="2026-11-10T00:00:00")
    api.push("submit_training", "job_name", aml.TRAIN_JOB)
    api.push("build_image", "return_value", built)
    outcomes = {task_id: api.run(dag.get_task(task_id))
                for task_id in ("validate_partition", "register_model", "push_image")}
    assert {t: o.state for t, o in outcomes.items()} == dict.fromkeys(outcomes, "success"), outcomes

    summary, model, image = (api.pulled(t, "return_value") for t in outcomes)
    seen = events(openlineage_listener)
    assert sorted((e["job"]["name"], e["eventType"]) for e in seen) == sorted(
        (f"edge_training.{t}", kind) for t in outcomes for kind in ("START", "COMPLETE"))
    complete = [e for e in seen if e["eventType"] == "COMPLETE"]
    assert {e["run"]["facets"]["airflow"]["dagRun"]["run_id"] for e in complete} == {"manual__2026-11-10"}
    named = {(d["namespace"], d["name"]) for e in seen for d in e["inputs"] + e["outputs"]}
    partition = (f"wasbs://training@{fakes.BLOB_HOST}", "telemetry/date=2026-11-10")
    model_version = (aml.WORKSPACE_URI, f"models/equipment-failure/versions/{model['version']}")
    pushed = (f"oci://{fakes.REGISTRY}", f"{fakes.MODEL}@{image['digest']}")
    assert named == {partition, model_version, pushed}

    by_task = {e["job"]["name"].split(".", 1)[1]: e for e in complete}
    assert [(d["namespace"], d["name"]) for d in by_task["validate_partition"]["inputs"]] == [partition]
    assert [(d["namespace"], d["name"]) for d in by_task["register_model"]["inputs"]] == [partition]
    assert [(d["namespace"], d["name"]) for d in by_task["register_model"]["outputs"]] == [model_version]
    assert [(d["namespace"], d["name"]) for d in by_task["push_image"]["outputs"]] == [pushed]
    partition_facets = by_task["validate_partition"]["inputs"][0]["facets"]
    assert partition_facets["edgeTraining_partition"]["fingerprint"] == summary["fingerprint"]
    assert partition_facets["version"]["datasetVersion"] == summary["fingerprint"]
    assert by_task["push_image"]["outputs"][0]["facets"]["version"]["datasetVersion"] == image["digest"]


# --- [openlineage] disabled ---------------------------------------------------------------------------
def test_disabling_the_provider_takes_its_listener_out_of_the_workers_plugins(openlineage_on):
    """What a worker's plugin manager registers: the provider's plugin decides when it is imported."""
    import importlib

    from airflow.providers.openlineage.plugins import openlineage as plugin_module

    mp, _ = openlineage_on
    try:
        for disabled, registered in (("true", False), ("false", True)):
            mp.setenv("AIRFLOW__OPENLINEAGE__DISABLED", disabled)
            _clear_openlineage_conf()
            plugin = importlib.reload(plugin_module).OpenLineageProviderPlugin
            assert [type(x).__name__ for x in plugin.listeners] == (["OpenLineageListener"] if registered else [])
            assert bool(plugin.macros) is registered
    finally:
        mp.delenv("AIRFLOW__OPENLINEAGE__TRANSPORT")
        mp.delenv("AIRFLOW__OPENLINEAGE__DISABLED")
        _clear_openlineage_conf()
        importlib.reload(plugin_module)  # as configured outside the test (no transport: off)
