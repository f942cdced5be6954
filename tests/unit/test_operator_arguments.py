"""Rendered operator arguments are checked for their type, never parsed back from text."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edge_training.exceptions import InvalidInputError, OperatorArgumentError
from edge_training.operators.arguments import flag, mapping, number, seconds
from edge_training.operators.container_image import ModelImagePushOperator
from edge_training.operators.edge_vm import EdgeVMReadinessOperator


class Task:
    task_id = "check_edge_vm"


def test_flags_numbers_and_durations_pass_through_as_rendered():
    assert flag(Task, "require_gpu", True) is True and flag(Task, "require_gpu", False) is False
    assert number(Task, "min_disk_gib", 2) == 2.0 and number(Task, "tolerance", 0.02, minimum=0) == 0.02
    assert seconds(Task, "job_timeout", None) is None
    assert seconds(Task, "job_timeout", 7200) == 7200.0
    assert seconds(Task, "job_timeout", timedelta(minutes=2)) == 120.0
    assert mapping(Task, "build_result", {"a": 1}, keys=("a",)) == {"a": 1}


@pytest.mark.parametrize("text", ["False", "false", "0", "None", ""])
def test_text_where_a_flag_belongs_is_refused_naming_task_argument_and_value(text):
    # bool("False") is True: guessing would turn the GPU requirement on.
    with pytest.raises(OperatorArgumentError) as refused:
        flag(Task, "require_gpu", text)
    message = str(refused.value)
    assert "'check_edge_vm'" in message and "'require_gpu'" in message and "a boolean" in message
    assert repr(text) in message and "render_template_as_native_obj=True" in message
    # Bad input fails the task at once instead of burning its retries.
    assert isinstance(refused.value, InvalidInputError)


@pytest.mark.parametrize("value", ["2.0", True, float("nan"), float("inf"), None])
def test_a_number_must_be_a_finite_number(value):
    with pytest.raises(OperatorArgumentError, match="'min_disk_gib' expected a finite number"):
        number(Task, "min_disk_gib", value)


def test_a_number_below_its_minimum_is_refused():
    with pytest.raises(OperatorArgumentError, match="'tolerance' expected a number of at least 0, found -0.1"):
        number(Task, "tolerance", -0.1, minimum=0)


@pytest.mark.parametrize("value", ["7200", 0, -5, "", "None", False])
def test_a_duration_must_be_positive_seconds_a_timedelta_or_none(value):
    with pytest.raises(OperatorArgumentError, match="'job_timeout' expected a positive duration"):
        seconds(Task, "job_timeout", value)


def test_a_task_output_rendered_as_text_is_refused_naming_the_missing_keys():
    with pytest.raises(OperatorArgumentError, match=r"expected a dict with keys \['repository', 'tags'\]"):
        mapping(Task, "build_result", "{'repository': 'r'}", keys=("repository", "tags"))
    with pytest.raises(OperatorArgumentError, match=r"missing \['tags'\]"):
        mapping(Task, "build_result", {"repository": "r"}, keys=("repository", "tags"))


def test_the_readiness_operator_refuses_a_text_threshold_before_connecting():
    op = EdgeVMReadinessOperator(task_id="check_edge_vm", stackhub_conn_id=None, min_disk_gib="2.0")
    with pytest.raises(OperatorArgumentError, match="'check_edge_vm': argument 'min_disk_gib'"):
        op.params_for_run()


def test_the_push_operator_refuses_a_build_result_rendered_as_json_text():
    op = ModelImagePushOperator(task_id="push_image", build_result='{"repository": "r"}')
    with pytest.raises(OperatorArgumentError, match="'push_image': argument 'build_result'"):
        op.execute({})


@pytest.mark.parametrize("configured", [True, False])
def test_deferrable_operators_take_airflows_default_deferrable_unless_told(monkeypatch, configured):
    from edge_training.operators.azureml import AzureMLSubmitJobOperator
    from edge_training.operators.stackhub_blob import StackHubPartitionOperator
    from edge_training.sensors.azureml import AzureMLJobSensor

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", str(configured))
    made = [
        AzureMLSubmitJobOperator(task_id="submit", command="true", environment="env:1", compute="vm"),
        StackHubPartitionOperator(task_id="validate", prefix="p/{partition_date}/"),
        AzureMLJobSensor(task_id="wait", job_name="j"),
    ]
    assert [op.deferrable for op in made] == [configured] * 3
    told = AzureMLSubmitJobOperator(task_id="told", command="true", environment="env:1", compute="vm",
                                    deferrable=not configured)
    assert told.deferrable is (not configured)
