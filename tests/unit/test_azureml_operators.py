"""Pure logic of the AML trigger and operators: serialisation, flags, the gate's decision."""

from __future__ import annotations

import importlib
import json
from datetime import timedelta

import pytest

from edge_training.exceptions import EvaluationGateError
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.assets import model_asset
from edge_training.operators.azureml import (
    AzureMLRegisterModelOperator,
    AzureMLSubmitJobOperator,
)
from edge_training.operators.gate import gate_decision, model_metrics_from_tags
from edge_training.triggers.azureml import AzureMLJobTrigger
from edge_training.triggers.events import EVENT_TIMEOUT


def test_trigger_serialisation_round_trip():
    trigger = AzureMLJobTrigger(
        job_name="edge_training-2026-11-10-abc",
        azureml_conn_id="aml_other",
        deadline=1_800_000_000.5,
        deadline_reason="execution_timeout",
        poll_policy=PollPolicy(initial_s=1, max_s=10).to_dict(),
        stream_logs=False,
        log_offset=1234,
        polls_done=7,
        max_transient_errors=5,
        cancel_on_timeout=False,
    )
    classpath, kwargs = trigger.serialize()
    # What the triggerer stores must survive JSON.
    kwargs = json.loads(json.dumps(kwargs))
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert isinstance(rebuilt, AzureMLJobTrigger)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["job_name"] == "edge_training-2026-11-10-abc"
    assert kwargs["log_offset"] == 1234 and kwargs["polls_done"] == 7
    assert PollPolicy(**kwargs["poll_policy"]).max_s == 10


def test_trigger_defaults_serialise_too():
    classpath, kwargs = AzureMLJobTrigger(job_name="j").serialize()
    assert classpath == "edge_training.triggers.azureml.AzureMLJobTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs


# --- gate ----------------------------------------------------------------------------------------
def test_gate_passes_without_a_baseline():
    d = gate_decision(new_metrics={"roc_auc": 0.7}, baseline_metrics=None, baseline_version=None,
                      metric="roc_auc", tolerance=0.0)
    assert d.passed and d.reason == "no production model yet"


def test_gate_passes_within_tolerance_and_fails_beyond():
    ok = gate_decision(new_metrics={"roc_auc": 0.89}, baseline_metrics={"roc_auc": 0.90}, baseline_version="3",
                       metric="roc_auc", tolerance=0.02)
    assert ok.passed
    bad = gate_decision(new_metrics={"roc_auc": 0.85}, baseline_metrics={"roc_auc": 0.90}, baseline_version="3",
                        metric="roc_auc", tolerance=0.02)
    assert not bad.passed and "version 3" in bad.reason and "0.0500" in bad.reason


def test_gate_exact_tolerance_passes():
    d = gate_decision(new_metrics={"m": 0.88}, baseline_metrics={"m": 0.90}, baseline_version="1",
                      metric="m", tolerance=0.02)
    assert d.passed


def test_gate_lower_is_better_metrics():
    d = gate_decision(new_metrics={"loss": 0.5}, baseline_metrics={"loss": 0.3}, baseline_version="1",
                      metric="loss", tolerance=0.1, higher_is_better=False)
    assert not d.passed


def test_gate_better_model_passes():
    d = gate_decision(new_metrics={"roc_auc": 0.95}, baseline_metrics={"roc_auc": 0.90}, baseline_version="1",
                      metric="roc_auc", tolerance=0.0)
    assert d.passed


@pytest.mark.parametrize(
    ("new", "base", "message"),
    [
        ({"accuracy": 0.9}, None, "expected metric 'roc_auc', found only ['accuracy']"),
        ({"roc_auc": "n/a"}, None, "must be a number"),
        ({"roc_auc": float("nan")}, None, "metric 'roc_auc' must be a number, found NaN"),
        ({"roc_auc": 0.9}, {"accuracy": 0.9}, "baseline model version 4"),
    ],
)
def test_gate_refuses_missing_metrics(new, base, message):
    with pytest.raises(EvaluationGateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        gate_decision(new_metrics=new, baseline_metrics=base, baseline_version="4", metric="roc_auc", tolerance=0.0)


def test_gate_errors_fail_at_once_instead_of_retrying():
    from airflow.sdk.exceptions import AirflowFailException

    from edge_training.exceptions import ModelOutputError

    assert issubclass(EvaluationGateError, AirflowFailException)
    assert issubclass(ModelOutputError, AirflowFailException)


def test_gate_refuses_negative_tolerance():
    with pytest.raises(EvaluationGateError):
        gate_decision(new_metrics={"m": 1}, baseline_metrics=None, baseline_version=None, metric="m", tolerance=-1)


def test_metrics_from_tags():
    assert model_metrics_from_tags({"metrics": '{"roc_auc": 0.9}'}) == {"roc_auc": 0.9}
    assert model_metrics_from_tags({}) is None
    assert model_metrics_from_tags({"metrics": "not json"}) is None


# --- operators' declared surface ------------------------------------------------------------------
def test_submit_operator_templates_every_user_facing_field():
    fields = set(AzureMLSubmitJobOperator.template_fields)
    assert {"code", "command", "environment", "compute", "inputs", "outputs", "experiment_name", "tags",
            "environment_variables", "partition", "data_fingerprint", "job_name", "job_timeout"} <= fields


def test_register_operator_defaults_its_outlet_to_the_model_asset():
    op = AzureMLRegisterModelOperator(
        task_id="register", job_name="j", model_name="equipment-failure", partition="2026-11-10",
        data_fingerprint="f", git_commit="c", training_environment="env:1",
    )
    assert op.outlets == [model_asset("equipment-failure")]
    assert model_asset("equipment-failure").uri == "azureml://models/equipment-failure"


def test_aml_bindings_survive_jinja_rendering():
    from jinja2.sandbox import SandboxedEnvironment

    from edge_training.operators.azureml import protect_aml_bindings

    command = "python3 train.py --data ${{inputs.data}} --out ${{ outputs.model }} --day {{ ds }}"
    rendered = SandboxedEnvironment().from_string(protect_aml_bindings(command)).render(ds="2026-11-10")
    assert rendered == "python3 train.py --data ${{inputs.data}} --out ${{ outputs.model }} --day 2026-11-10"
    # A command that already uses raw blocks is left as written.
    raw = "{% raw %}python3 train.py --data ${{inputs.data}}{% endraw %}"
    assert protect_aml_bindings(raw) == raw


def test_submit_operator_command_renders_with_aml_bindings():
    op = AzureMLSubmitJobOperator(
        task_id="submit", command="python3 job.py ${{inputs.data}} {{ params.n }}", environment="env:1",
        compute="edge-vm", partition="2026-11-10", data_fingerprint="f",
    )
    # Airflow's own template rendering, as the task runner does it before execute().
    op.render_template_fields({"params": {"n": 3}})
    assert op.command == "python3 job.py ${{inputs.data}} 3"


def _submit(**kwargs) -> AzureMLSubmitJobOperator:
    return AzureMLSubmitJobOperator(task_id="submit", command="python3 train.py", environment="env:1",
                                    compute="edge-vm", **kwargs)


@pytest.mark.parametrize(
    ("execution_timeout", "job_timeout", "reason", "seconds_after_start"),
    [
        (timedelta(minutes=2), 3600, "execution_timeout", 120),  # the task's limit comes first
        (timedelta(hours=3), 60, "job_timeout", 70),  # the job was created 10 s after the task started
        (None, None, None, None),
    ],
)
def test_the_earlier_of_job_timeout_and_execution_timeout_travels_into_the_trigger(
    execution_timeout, job_timeout, reason, seconds_after_start
):
    """Airflow 3.3 applies neither limit to a deferral, so the trigger must carry the earlier one."""
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from edge_training.hooks.azureml import JobState

    started = datetime(2026, 11, 20, 12, 0, 0, tzinfo=timezone.utc)
    op = _submit(execution_timeout=execution_timeout, job_timeout=job_timeout)
    job = JobState(name="j", status="Running", studio_url=None, created_at="2026-11-20T12:00:10Z")
    trigger = op._trigger(job, {"ti": SimpleNamespace(start_date=started)})
    assert trigger.deadline_reason == reason
    if seconds_after_start is None:
        assert trigger.deadline is None
    else:
        assert trigger.deadline == started.timestamp() + seconds_after_start


def test_a_timeout_event_names_the_limit_that_passed():
    from edge_training.exceptions import AzureMLJobTimeoutError

    op = _submit(execution_timeout=timedelta(minutes=2), job_timeout=3600)
    event = {"status": EVENT_TIMEOUT, "job_name": "j", "message": "AML job j passed its deadline",
             "deadline_reason": "execution_timeout"}
    with pytest.raises(AzureMLJobTimeoutError, match=r"execution_timeout 0:02:00"):
        op._finish_event(event)
    with pytest.raises(AzureMLJobTimeoutError, match=r"job timeout 3600.0 s"):
        op._finish_event({**event, "deadline_reason": "job_timeout"})
