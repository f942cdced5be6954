"""The edge_training DAG's shape: tasks, order, partitions, pool, params. No services needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow.dag_processing.dagbag import DagBag

REPO = Path(__file__).resolve().parents[2]
CHAIN = [
    "check_edge_vm",
    "validate_partition",
    "submit_training",
    "evaluate_gate",
    "register_model",
    "build_image",
    "push_image",
    "summary",
]


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags["edge_training"]


def test_tasks_run_in_the_documented_order(dag):
    """Each task follows the one before it in the chain, and takes task outputs only from earlier tasks."""
    assert set(dag.task_ids) == set(CHAIN)
    for position, (upstream, downstream) in enumerate(zip(CHAIN, CHAIN[1:])):
        upstreams = dag.get_task(downstream).upstream_task_ids
        assert upstream in upstreams and upstreams <= set(CHAIN[: position + 1]), downstream


def test_every_task_output_read_by_key_is_pushed_by_key(dag):
    """``task.output["fingerprint"]`` reads the XCom *key* "fingerprint", which exists only when the
    producing task pushes each key of its result (multiple_outputs); otherwise the reader fails with
    XComNotFound at run time."""
    from airflow.sdk.definitions.xcom_arg import XComArg

    read = set()
    for task in dag.tasks:
        for field in task.template_fields:
            for producer, key in XComArg.iter_xcom_references(getattr(task, field)):
                read.add((task.task_id, producer.task_id, key))
                if key != "return_value":
                    assert producer.multiple_outputs, f"{task.task_id}.{field} reads {producer.task_id}[{key!r}]"
    assert ("submit_training", "validate_partition", "fingerprint") in read
    assert ("push_image", "build_image", "return_value") in read


def test_runs_are_keyed_by_daily_partition(dag):
    from airflow.sdk import CronPartitionTimetable

    assert isinstance(dag.timetable, CronPartitionTimetable)
    assert dag.catchup is False


def test_active_runs_default_to_four_and_follow_the_deployment_setting(monkeypatch):
    def parsed_max_active_runs() -> int:
        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}, bag.import_errors
        return bag.dags["edge_training"].max_active_runs

    monkeypatch.delenv("EDGE_TRAINING_MAX_ACTIVE_RUNS", raising=False)
    assert parsed_max_active_runs() == 4
    monkeypatch.setenv("EDGE_TRAINING_MAX_ACTIVE_RUNS", "9")
    assert parsed_max_active_runs() == 9


def test_the_model_name_setting_names_the_param_default_and_the_declared_asset(monkeypatch):
    from edge_training.assets import model_asset

    monkeypatch.setenv("EDGE_MODEL_NAME", "pump-failure")
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.dags["edge_training"]
    assert dag.params["model_name"] == "pump-failure"
    outlets = dag.get_task("push_image").outlets
    assert model_asset("pump-failure") in outlets
    assert any(type(o).__name__ == "AssetAlias" for o in outlets)


def test_training_takes_an_edge_vm_slot_and_defers_unless_asked_to_wait_in_the_worker(dag):
    """The wiring only: that the pool really bounds the trainings on the VM is proved through the scheduler
    by test_backfill_with_a_missing_partition_then_reprocess_failed (tests/e2e/test_edge_training_dag.py)."""
    submit = dag.get_task("submit_training")
    assert submit.pool == "edge_vm"
    # Deferrable unless a run asks to wait in the worker (the fault battery runs that path): the DAG's
    # native rendering hands the operator the param's bool itself.
    assert dag.params["wait_in_triggerer"] is True and dag.render_template_as_native_obj is True
    env = dag.get_template_env()
    for wait_in_triggerer in (True, False):
        rendered = env.from_string(submit.deferrable).render(params={"wait_in_triggerer": wait_in_triggerer})
        assert rendered is wait_in_triggerer
    assert dag.get_task("push_image").outlets, "push_image must emit the model asset"
    assert not dag.get_task("register_model").outlets, "one event per shippable model: push_image's"
    assert dag.get_task("register_model").pool == "edge_model_registry"


def test_every_task_has_retries_and_a_timeout(dag):
    for task in dag.tasks:
        if task.task_id == "summary":
            continue
        assert task.retries >= 1, task.task_id
        assert task.execution_timeout is not None, task.task_id


def test_params_have_defaults_and_descriptions(dag):
    for name in ("partition", "force_retrain", "model_name", "gate_tolerance", "min_disk_gib"):
        param = dag.params.get_param(name)
        assert param.description, name
    assert dag.params["force_retrain"] is False
    assert dag.doc_md and "backfill" in dag.doc_md


def test_summary_runs_after_a_gated_skip_and_reports_it_gated(dag):
    """A gate that refuses the model skips register/build/push; the summary still runs (none_failed) and
    says the run was gated, with the gate's reason, rather than incomplete."""
    from types import SimpleNamespace

    summary = dag.get_task("summary")
    assert summary.trigger_rule == "none_failed"
    xcoms = {
        "validate_partition": {"partition_date": "2026-11-10", "fingerprint": "sha256:abc"},
        "submit_training": {"job_name": "edge_training-2026-11-10-abc", "status": "Completed", "duration_s": 5.1},
        "evaluate_gate": {"passed": False, "reason": "roc_auc 0.80 is worse than version 3 (0.90)"},
    }
    ti = SimpleNamespace(xcom_pull=lambda task_ids: xcoms.get(task_ids))
    line = summary.python_callable(ti=ti, dag_run=SimpleNamespace(start_date=None), params={})
    assert line["status"] == "gated" and line["model"] is None and line["image"] is None
    assert line["gate"]["reason"].startswith("roc_auc 0.80 is worse")
    xcoms["evaluate_gate"] = {"passed": True}
    assert summary.python_callable(ti=ti, dag_run=SimpleNamespace(start_date=None), params={})["status"] == \
        "incomplete"


def test_min_training_seconds_is_off_by_default_and_reaches_the_training_command(dag):
    """Off (0), the job's command is the plain training; set, train.py gets --min-seconds (bench/backfill.py
    uses it for trainings of a known length). AML's own ${{...}} bindings pass through untouched."""
    submit = dag.get_task("submit_training")
    param = dag.params.get_param("min_training_seconds")
    assert param.value == 0 and param.description and param.schema["minimum"] == 0
    env = dag.get_template_env()
    ti = XComsOf({"validate_partition": {"job_inputs": {"data": {"type": "uri_folder", "path": "p"}}}})
    plain = ("python3 train.py --data ${{inputs.data}} --output ${{outputs.model}} --label failure")
    assert env.from_string(submit.command).render(ti=ti, params={"min_training_seconds": 0}) == plain
    assert (env.from_string(submit.command).render(ti=ti, params={"min_training_seconds": 60})
            == plain + " --min-seconds 60")


class XComsOf:
    """A task instance whose xcom_pull answers from ``{task_id: {key: value}}``."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def xcom_pull(self, task_ids: str, key: str = "return_value"):
        return self.values[task_ids][key]


def test_the_training_command_reads_each_day_of_the_window_and_the_job_gets_them_as_inputs(dag):
    """validate_partition's job_inputs (one per day, oldest first) become the job's inputs and one --data each;
    the days used and the gaps reach the job's and the model's tags and the image's labels."""
    submit, register, build = (dag.get_task(t) for t in ("submit_training", "register_model", "build_image"))
    inputs = {"data_2026_11_08": {"type": "uri_folder", "path": "a"}, "data": {"type": "uri_folder", "path": "b"}}
    ti = XComsOf({"validate_partition": {"job_inputs": inputs}})
    command = dag.get_template_env().from_string(submit.command).render(ti=ti, params={"min_training_seconds": 0})
    assert command == ("python3 train.py --data ${{inputs.data_2026_11_08}} --data ${{inputs.data}}"
                       " --output ${{outputs.model}} --label failure")
    assert (submit.inputs.operator.task_id, submit.inputs.key) == ("validate_partition", "job_inputs")
    for tags in (submit.tags, register.extra_tags):
        assert {k: (v.operator.task_id, v.key) for k, v in tags.items() if k in ("data_days", "missing_days")} == {
            "data_days": ("validate_partition", "data_days"), "missing_days": ("validate_partition", "missing_days")}
    assert (build.data_days.operator.task_id, build.data_days.key) == ("validate_partition", "data_days")
    window = dag.get_task("validate_partition")
    assert (window.window_days, window.min_days) == ("{{ params.window_days }}", "{{ params.min_days }}")
    assert (dag.params["window_days"], dag.params["min_days"]) == (1, None)


def test_the_schedule_end_stops_the_timetables_own_runs_but_not_backfills(monkeypatch):
    """EDGE_TRAINING_SCHEDULE_END (set by the demo's and the tests' Airflow): the scheduler finds no run of its
    own to start, while a backfill over later days still gets one run per day."""
    import datetime as dt

    from airflow.serialization.serialized_objects import DagSerialization

    def serialized():
        bag = DagBag(dag_folder=str(REPO / "dags" / "edge_training.py"))
        assert bag.import_errors == {}, bag.import_errors
        return DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["edge_training"]))

    monkeypatch.delenv("EDGE_TRAINING_SCHEDULE_END", raising=False)
    assert serialized().next_dagrun_info(last_automated_run_info=None) is not None
    monkeypatch.setenv("EDGE_TRAINING_SCHEDULE_END", "2026-11-01")
    dag = serialized()
    assert dag.next_dagrun_info(last_automated_run_info=None) is None
    days = dag.iter_dagrun_infos_between(dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
                                         dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc))
    assert [info.partition_key for info in days] == ["2026-12-01T00:00:00", "2026-12-02T00:00:00"]


def test_the_aml_poll_setting_bounds_how_long_a_finished_job_goes_unnoticed(monkeypatch):
    """EDGE_AML_POLL_MAX_SECONDS: no wait between two looks at a running job is longer (the tests' Airflow
    sets 5); unset, the default 15 s; a bad value is an import error naming the setting."""
    def submit_policy():
        bag = DagBag(dag_folder=str(REPO / "dags" / "edge_training.py"))
        return bag, (bag.dags["edge_training"].get_task("submit_training").poll_policy if bag.dags else None)

    monkeypatch.setenv("EDGE_AML_POLL_MAX_SECONDS", "5")
    _, policy = submit_policy()
    waits = [policy.interval(polls, rand) for polls in range(12) for rand in (0.0, 0.5, 0.99)]
    assert max(waits) == 5 and min(waits) > 0, waits
    monkeypatch.delenv("EDGE_AML_POLL_MAX_SECONDS")
    _, policy = submit_policy()
    assert max(policy.interval(polls, 0.0) for polls in range(12)) == 15
    monkeypatch.setenv("EDGE_AML_POLL_MAX_SECONDS", "soon")
    bag, _ = submit_policy()
    assert any("EDGE_AML_POLL_MAX_SECONDS 'soon': expected seconds from 1 to 300" in error
               for error in bag.import_errors.values()), bag.import_errors
