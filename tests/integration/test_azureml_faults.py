"""The trigger rides out 429 and 503 storms from the AML double's fault switch (real SDK, real job)."""

from __future__ import annotations

import os

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskDeferred
from azureml_support import execute_task, job_command, make_context, run_trigger, unique_fingerprint, write_job_code

from devstack.aml.admin import AmlDoubleAdmin
from edge_training.hooks.azureml import AzureMLHook
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.operators.azureml import AzureMLSubmitJobOperator
from edge_training.triggers.events import EVENT_ERROR, EVENT_SUCCESS

FAST = PollPolicy(initial_s=0.5, factor=1.5, max_s=2.0, jitter=0.2, error_initial_s=0.3, error_max_s=4.0)


@pytest.fixture
def admin(stack_env):
    admin = AmlDoubleAdmin.from_env(stack_env)
    yield admin
    admin.clear_faults()


def test_429_and_503_storms_are_ridden_out_honouring_retry_after(stack_env, admin, tmp_path):
    with DAG(dag_id="aml_it_faults", schedule=None) as dag:
        op = AzureMLSubmitJobOperator(
            task_id="submit_training",
            code=write_job_code(tmp_path / "code"),
            command=job_command(lines=8, pause=0.5),
            environment=os.environ["EDGE_AML_ENVIRONMENT"],
            compute=os.environ["EDGE_AML_COMPUTE"],
            partition="2026-11-10",
            data_fingerprint=unique_fingerprint(),
            poll_policy=FAST,
            deferrable=True,
        )
    context = make_context(dag, partition="2026-11-10")
    with pytest.raises(TaskDeferred) as deferred:
        execute_task(op, context)
    name = deferred.value.trigger.job_name
    path = f"GET .*/jobs/{name}$"
    # Only this job's status route is hit, so other tests sharing the double are untouched.
    admin.add_fault(route=path, kind="429", retry_after=1.5, count=4)
    admin.add_fault(route=path, kind="503", retry_after=0.5, count=4)

    event = run_trigger(deferred.value.trigger, timeout=240)
    assert (event["status"], event["job_status"]) == (EVENT_SUCCESS, "Completed"), event
    assert op.execute_complete(context, event)["status"] == "Completed"

    mine = [r for r in admin.requests()["recent"] if r["method"] == "GET" and r["path"].endswith(f"/jobs/{name}")]
    injected = [r for r in mine if r.get("injected")]
    assert sorted({r["injected"] for r in injected}) == ["429", "503"]
    assert len(injected) == 8
    # After each 429 the next status call waited at least the Retry-After the double sent.
    for before, after in zip(mine, mine[1:]):
        if before.get("injected") == "429":
            assert after["time"] - before["time"] >= 1.5 - 0.05, (before, after)


def test_a_hard_error_is_not_retried(stack_env, admin):
    """A 404 is not transient: the trigger reports it at once instead of backing off."""
    from edge_training.triggers.azureml import AzureMLJobTrigger

    trigger = AzureMLJobTrigger(job_name=f"no-such-job-{unique_fingerprint()[:8]}", poll_policy=FAST.to_dict())
    event = run_trigger(trigger, timeout=60)
    assert event["status"] == EVENT_ERROR
    assert "not found" in event["message"]
    with AzureMLHook() as hook:
        assert hook.find_job(trigger.job_name) is None


def test_removing_one_fault_leaves_the_others_in_place(admin):
    """Cases that run side by side each remove only their own fault."""
    first = admin.add_fault(r"^PUT .*/jobs/side-by-side-a-", "slow_job", delay=5)
    second = admin.add_fault(r"^PUT .*/jobs/side-by-side-b-", "job_epilogue", command="true")
    admin.remove_fault(first)
    left = admin._call("GET", "/_admin/faults")["faults"]
    assert [(f["id"], f["kind"], f["command"]) for f in left] == [(second["id"], "job_epilogue", "true")]
    admin.remove_fault(first)  # already gone: not an error
    with pytest.raises(Exception, match="400"):
        admin.add_fault("PUT job", "job_epilogue")  # an epilogue needs its command
