"""CancelJobsLeftRunning: a failed run cancels the AML job its ended training left running.

The e2e proof (the triggerer down, the task marked failed through the REST API, the job canceled by the
dag-processor's callback) is tests/faults/test_faults.py::test_a_task_marked_failed_while_no_triggerer_runs_still_cancels_its_job.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

import edge_training.hooks.azureml as azureml_hooks
from edge_training import run_cleanup
from edge_training.run_cleanup import CancelJobsLeftRunning
from edge_training.triggers.azureml import TASK_ENDED_STATES


class FakeHook:
    """Records what the callback asks of AML; ``fail_on`` names jobs whose cancel raises."""

    built: list["FakeHook"] = []

    def __init__(self, *, azureml_conn_id: str, fail_on: frozenset = frozenset()) -> None:
        self.azureml_conn_id = azureml_conn_id
        self.canceled: list[tuple[str, float]] = []
        self.closed = False
        self.fail_on = fail_on
        FakeHook.built.append(self)

    def cancel_job(self, name: str, *, wait_s: float):
        if name in self.fail_on:
            raise RuntimeError(f"AML said no to {name}")
        self.canceled.append((name, wait_s))
        return SimpleNamespace(status="Canceled")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def aml(monkeypatch):
    FakeHook.built = []
    fail_on: set[str] = set()
    monkeypatch.setattr(azureml_hooks, "AzureMLHook",
                        lambda **kwargs: FakeHook(**kwargs, fail_on=frozenset(fail_on)))
    return SimpleNamespace(built=FakeHook.built, fail_on=fail_on)


def run_failed(monkeypatch, states: dict[str, str], stored: dict[str, str]) -> None:
    """Call the callback as the dag-processor does for a failed run with these task states and stored jobs."""
    monkeypatch.setattr(run_cleanup, "run_task_states", lambda dag_id, run_id, task_ids: dict(states))
    monkeypatch.setattr(run_cleanup, "stored_job_name", lambda dag_id, run_id, task_id: stored.get(task_id))
    callback = CancelJobsLeftRunning(task_ids=["submit_training", "submit_other"], azureml_conn_id="aml_conn")
    callback({"dag": SimpleNamespace(dag_id="edge_training"), "run_id": "manual__2026-11-08"})


@pytest.mark.parametrize("state", sorted(TASK_ENDED_STATES))
def test_a_training_that_ended_has_its_job_canceled_if_it_still_runs(monkeypatch, aml, state):
    """Marked success as well as failed: the trigger's on_kill cancels in the same states (a finished job
    is left alone by ``cancel_job`` itself)."""
    run_failed(monkeypatch, {"submit_training": state}, {"submit_training": "job-1"})
    [hook] = aml.built
    assert hook.azureml_conn_id == "aml_conn"
    assert hook.canceled == [("job-1", 10.0)]
    assert hook.closed


@pytest.mark.parametrize("state", ["scheduled", "queued", "running", "deferred", "up_for_retry", None])
def test_a_training_that_still_follows_its_job_is_left_alone(monkeypatch, aml, state):
    run_failed(monkeypatch, {"submit_training": state}, {"submit_training": "job-1"})
    assert aml.built == [], "no AML client is even built"


def test_a_training_that_failed_before_submitting_has_nothing_to_cancel(monkeypatch, aml):
    run_failed(monkeypatch, {"submit_training": "failed"}, {})
    assert aml.built == []


def test_one_failed_cancel_does_not_keep_the_other_jobs_running(monkeypatch, aml, caplog):
    aml.fail_on.add("job-1")
    with caplog.at_level(logging.ERROR, logger=run_cleanup.__name__):
        run_failed(monkeypatch, {"submit_training": "failed", "submit_other": "failed"},
                   {"submit_training": "job-1", "submit_other": "job-2"})
    [hook] = aml.built
    assert hook.canceled == [("job-2", 10.0)]
    assert hook.closed
    assert "could not cancel AML job job-1 of submit_training" in caplog.text


def test_the_training_dag_cancels_its_trainings_jobs_when_a_run_fails(monkeypatch, aml):
    """The DAG's own failure callback, called as the dag-processor calls it."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "edge_training.py"))
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.dags["edge_training"]
    [callback] = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
    monkeypatch.setattr(run_cleanup, "run_task_states", lambda dag_id, run_id, task_ids: {"submit_training": "failed"})
    monkeypatch.setattr(run_cleanup, "stored_job_name",
                        lambda dag_id, run_id, task_id: f"{dag_id}/{run_id}/{task_id}")
    callback({"dag": dag, "run_id": "manual__2026-11-08"})
    assert aml.built[0].canceled == [("edge_training/manual__2026-11-08/submit_training", 10.0)]
