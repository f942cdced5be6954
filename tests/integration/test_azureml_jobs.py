"""AML training operator, trigger and sensor against the AML double with the real azure-ai-ml SDK.

Each test runs real jobs on the double (which runs them in containers on the edge VM). Airflow's
runtime around the operator is reduced to what it hands an operator: a context with a task
instance, the DAG, the run's partition and a task state store.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import TaskDeferred
from azureml_support import (
    execute_task,
    FileTaskStateStore,
    RecordingTI,
    jobs_named,
    job_command,
    make_context,
    run_trigger,
    unique_fingerprint,
    wait_for_status,
    write_job_code,
)

from edge_training.exceptions import AzureMLJobFailedError, AzureMLJobTimeoutError
from edge_training.hooks.azureml import AzureMLHook
from edge_training.hooks.azureml_naming import build_job_name
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.links.azureml import AzureMLJobLink
from edge_training.operators.azureml import AzureMLSubmitJobOperator
from edge_training.sensors.azureml import AzureMLJobSensor
from edge_training.triggers.azureml import AzureMLJobTrigger
from edge_training.triggers.events import EVENT_FAILED, EVENT_SUCCESS, EVENT_TIMEOUT

REPO = Path(__file__).resolve().parents[2]
FAST = PollPolicy(initial_s=0.5, factor=1.5, max_s=2.0, jitter=0.2, error_initial_s=0.5, error_max_s=4.0)
PARTITION = "2026-11-10T02:00:00"
DAG_ID = "aml_it"


@pytest.fixture
def hook(stack_env):
    with AzureMLHook(azureml_conn_id="azureml_default") as h:
        yield h


@pytest.fixture
def code_dir(tmp_path):
    return write_job_code(tmp_path / "code")


def make_operator(code_dir: str, fingerprint: str, *, command: str, dag_id: str = DAG_ID, **kwargs):
    with DAG(dag_id=dag_id, schedule=None) as dag:
        op = AzureMLSubmitJobOperator(
            task_id="submit_training",
            code=code_dir,
            command=command,
            environment=os.environ["EDGE_AML_ENVIRONMENT"],
            compute=os.environ["EDGE_AML_COMPUTE"],
            experiment_name="edge-training-it",
            partition=PARTITION,
            data_fingerprint=fingerprint,
            outputs={"model": None},
            poll_policy=FAST,
            **{"deferrable": True, **kwargs},
        )
    return op, dag


def defer(op: AzureMLSubmitJobOperator, context: dict) -> AzureMLJobTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        execute_task(op, context)
    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert isinstance(trigger, AzureMLJobTrigger)
    return trigger


def test_job_runs_to_completed_and_its_log_reaches_the_task_log(code_dir, hook, capfd):
    fingerprint = unique_fingerprint()
    op, dag = make_operator(code_dir, fingerprint, command=job_command(lines=6, pause=0.3))
    context = make_context(dag, partition=PARTITION)

    trigger = defer(op, context)
    name = build_job_name(DAG_ID, PARTITION, fingerprint)
    assert trigger.job_name == name
    # The studio link is stored before deferring, so the UI shows it while the job runs.
    assert name in context["ti"].xcom[AzureMLJobLink.key]

    event = run_trigger(trigger)
    assert (event["status"], event["job_status"]) == (EVENT_SUCCESS, "Completed")
    shown = capfd.readouterr().out
    for i in range(6):
        assert f"edge-test line {i} of 6" in shown
    assert "edge-test done" in shown
    # Each line once: the trigger reads only new bytes each poll.
    assert shown.count("edge-test line 3 of 6") == 1

    result = op.execute_complete(context, event)
    assert result["job_name"] == name and result["status"] == "Completed"
    assert result["outputs"]["model"].startswith("azureml://")
    assert result["duration_s"] is not None and result["duration_s"] > 0
    json.dumps(result)

    # Running the task again (a re-run backfill) reuses the completed job instead of training again.
    again, dag2 = make_operator(code_dir, fingerprint, command=job_command(lines=6, pause=0.3))
    assert execute_task(again, make_context(dag2, partition=PARTITION))["job_name"] == name
    assert jobs_named(hook, name) == [name]


def test_failed_job_raises_its_own_error_and_the_next_try_is_a_new_attempt(code_dir, hook):
    fingerprint = unique_fingerprint()
    op, dag = make_operator(code_dir, fingerprint, command=job_command(lines=2, pause=0.1, exit_code=3))
    context = make_context(dag, partition=PARTITION)
    event = run_trigger(defer(op, context))
    assert (event["status"], event["job_status"]) == (EVENT_FAILED, "Failed")
    name = event["job_name"]
    error = hook.get_run_info(name).error
    assert error
    with pytest.raises(AzureMLJobFailedError) as failed:
        op.execute_complete(context, event)
    assert name in str(failed.value) and error in str(failed.value) and "Failed" in str(failed.value)

    # The retry submits attempt 2 next to the failed job, never reusing a failed one.
    retry, dag2 = make_operator(code_dir, fingerprint, command=job_command(lines=2, pause=0.1, exit_code=3))
    trigger = defer(retry, make_context(dag2, partition=PARTITION))
    assert trigger.job_name == f"{name}-a2"
    assert jobs_named(hook, name) == [name, f"{name}-a2"]
    hook.cancel_job(trigger.job_name)


def test_second_execution_attaches_to_the_running_job(code_dir, hook):
    fingerprint = unique_fingerprint()
    command = job_command(lines=60, pause=1.0)
    first, dag = make_operator(code_dir, fingerprint, command=command)
    trigger = defer(first, make_context(dag, partition=PARTITION))
    name = trigger.job_name
    try:
        wait_for_status(hook, name, {"Running"})
        retry, dag2 = make_operator(code_dir, fingerprint, command=command)
        assert defer(retry, make_context(dag2, partition=PARTITION)).job_name == name
        assert jobs_named(hook, name) == [name]
    finally:
        hook.cancel_job(name)


def test_canceling_a_finished_job_sends_no_cancel(code_dir, hook, monkeypatch):
    """The trigger's on_kill and the run's failure callback (edge_training.run_cleanup) may both cancel one
    job: whichever comes second finds it ended and leaves it alone."""
    from edge_training.hooks.azureml import CommandJobSpec

    name = build_job_name(DAG_ID, PARTITION, unique_fingerprint())
    spec = CommandJobSpec(command=job_command(lines=1, pause=0.1), environment=os.environ["EDGE_AML_ENVIRONMENT"],
                          compute=os.environ["EDGE_AML_COMPUTE"], code=code_dir, outputs={"model": None})
    hook.submit_command_job(name, spec)
    wait_for_status(hook, name, {"Completed"})
    monkeypatch.setattr(hook.client.jobs, "begin_cancel",
                        lambda *args, **kwargs: pytest.fail(f"a cancel was sent for the finished job {name}"))
    assert hook.cancel_job(name).status == "Completed"


def test_a_name_another_spec_holds_is_refused_as_an_existing_job(code_dir, hook):
    """Two runs of a partition that both submit (the second with its own run's OpenLineage ids): the double,
    like AML, refuses a different spec under an existing name with 409, and the hook names that."""
    import dataclasses

    from edge_training.exceptions import AzureMLJobExistsError
    from edge_training.hooks.azureml import CommandJobSpec

    name = build_job_name(DAG_ID, PARTITION, unique_fingerprint())
    spec = CommandJobSpec(command=job_command(lines=1, pause=0.1), environment=os.environ["EDGE_AML_ENVIRONMENT"],
                          compute=os.environ["EDGE_AML_COMPUTE"], code=code_dir, outputs={"model": None},
                          environment_variables={"OPENLINEAGE_PARENT_RUN_ID": "run-of-the-first"})
    hook.submit_command_job(name, spec)
    try:
        assert hook.submit_command_job(name, spec).name == name  # the same spec: the same job
        other = dataclasses.replace(spec, environment_variables={"OPENLINEAGE_PARENT_RUN_ID": "run-of-the-second"})
        with pytest.raises(AzureMLJobExistsError, match=r"already exists .* with another spec \(HTTP 409\)"):
            hook.submit_command_job(name, other)
        assert jobs_named(hook, name) == [name]
        assert hook.client.jobs.get(name).environment_variables == {"OPENLINEAGE_PARENT_RUN_ID": "run-of-the-first"}
    finally:
        hook.cancel_job(name)


CHILD = """
import json, sys
from airflow.sdk import DAG
from azureml_support import FileTaskStateStore, execute_task, make_context
from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.operators.azureml import AzureMLSubmitJobOperator
p = json.loads(sys.argv[1])
with DAG(dag_id=p["dag_id"], schedule=None) as dag:
    op = AzureMLSubmitJobOperator(
        task_id="submit_training", code=p["code"], command=p["command"], environment=p["environment"],
        compute=p["compute"], partition=p["partition"], data_fingerprint=p["fingerprint"],
        outputs={"model": None}, deferrable=False, poll_policy=PollPolicy(initial_s=0.5, max_s=2.0))
execute_task(op, make_context(dag, partition=p["partition"], store=FileTaskStateStore(p["store"])))
"""


def test_sigkilled_worker_then_retry_attaches_to_the_same_job(code_dir, hook, tmp_path):
    fingerprint = unique_fingerprint()
    command = job_command(lines=60, pause=1.0)
    store_path = tmp_path / "task_state_store.json"
    params = {
        "dag_id": DAG_ID, "code": code_dir, "command": command, "environment": os.environ["EDGE_AML_ENVIRONMENT"],
        "compute": os.environ["EDGE_AML_COMPUTE"], "partition": PARTITION, "fingerprint": fingerprint,
        "store": str(store_path),
    }
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "plugins"), str(Path(__file__).parent)]))
    # A fresh worker process: not the cloud this test process's open hook registered.
    env.pop("AZUREML_CURRENT_CLOUD", None)
    worker = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(params)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    name = None
    try:
        deadline = time.time() + 120
        while name is None:
            assert worker.poll() is None, f"worker exited early: {worker.stderr.read().decode()[-2000:]}"
            assert time.time() < deadline, "the worker never stored its job in the task state store"
            name = FileTaskStateStore(store_path).get("azureml_job_name")
            time.sleep(0.3)
        wait_for_status(hook, name, {"Running"})
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        assert worker.returncode == -signal.SIGKILL
        assert hook.get_job(name).status == "Running"  # a killed worker cancels nothing

        retry, dag = make_operator(code_dir, fingerprint, command=command)
        trigger = defer(retry, make_context(dag, partition=PARTITION, store=FileTaskStateStore(store_path)))
        assert trigger.job_name == name
        assert jobs_named(hook, name) == [name]
    finally:
        if worker.poll() is None:
            worker.kill()
        if name:
            hook.cancel_job(name)


def _containers_for(job_name: str) -> list:
    client = docker.DockerClient(base_url=os.environ.get("EDGE_DOCKER_HOST", "unix:///var/run/docker.sock"))
    try:
        return client.containers.list(all=True, filters={"label": f"azureml.job={job_name}"})
    finally:
        client.close()


def test_killing_the_deferred_task_cancels_the_job_and_its_container(code_dir, hook):
    fingerprint = unique_fingerprint()
    op, dag = make_operator(code_dir, fingerprint, command=job_command(lines=120, pause=1.0))
    trigger = defer(op, make_context(dag, partition=PARTITION))
    name = trigger.job_name

    async def run_then_kill() -> None:
        task = asyncio.create_task(trigger.run().__anext__())
        await asyncio.to_thread(wait_for_status, hook, name, {"Running"})
        assert _containers_for(name), "the running job should have a container on the VM"
        task.cancel()  # the triggerer stops the trigger, then calls on_kill
        await asyncio.gather(task, return_exceptions=True)
        await trigger.on_kill()

    asyncio.run(run_then_kill())
    assert wait_for_status(hook, name, {"Canceled"}, timeout=60).status == "Canceled"
    deadline = time.time() + 30
    while _containers_for(name) and time.time() < deadline:
        time.sleep(0.5)
    assert _containers_for(name) == []


def test_timeout_cancels_the_job_and_reports_it(code_dir, hook):
    fingerprint = unique_fingerprint()
    op, dag = make_operator(code_dir, fingerprint, command=job_command(lines=120, pause=1.0), job_timeout=8)
    context = make_context(dag, partition=PARTITION)
    event = run_trigger(defer(op, context))
    assert event["status"] == EVENT_TIMEOUT and event["canceled"] is True
    with pytest.raises(AzureMLJobTimeoutError, match="passed its deadline and was canceled"):
        op.execute_complete(context, event)
    assert wait_for_status(hook, event["job_name"], {"Canceled"}, timeout=60).status == "Canceled"


def test_non_deferrable_mode_waits_in_the_worker(code_dir, hook, capfd):
    fingerprint = unique_fingerprint()
    op, dag = make_operator(code_dir, fingerprint, command=job_command(lines=3, pause=0.2), deferrable=False)
    result = execute_task(op, make_context(dag, partition=PARTITION))
    assert result["status"] == "Completed"
    assert "edge-test line 2 of 3" in capfd.readouterr().out


def test_sensor_waits_on_an_existing_job(code_dir, hook):
    fingerprint = unique_fingerprint()
    op, dag = make_operator(code_dir, fingerprint, command=job_command(lines=4, pause=0.3))
    name = defer(op, make_context(dag, partition=PARTITION)).job_name
    with DAG(dag_id="aml_it_sensor", schedule=None) as sdag:
        sensor = AzureMLJobSensor(task_id="wait", job_name=name, poll_policy=FAST, timeout=300, deferrable=True)
    context = make_context(sdag, partition=PARTITION)
    with pytest.raises(TaskDeferred) as deferred:
        execute_task(sensor, context)
    event = run_trigger(deferred.value.trigger)
    result = sensor.execute_complete(context, event)
    assert result["status"] == "Completed" and result["job_name"] == name
    # Once finished, the sensor answers without deferring.
    assert execute_task(sensor, make_context(sdag, partition=PARTITION, ti=RecordingTI()))["job_name"] == name


def test_sync_on_kill_cancels_the_job_the_worker_waits_for(code_dir, hook):
    """What Airflow's task runner does on SIGTERM in the worker: call on_kill while execute waits."""
    import threading

    fingerprint = unique_fingerprint()
    op, dag = make_operator(code_dir, fingerprint, command=job_command(lines=120, pause=1.0), deferrable=False)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = execute_task(op, make_context(dag, partition=PARTITION))
        except Exception as err:  # the failure is the expected outcome, checked below
            outcome["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    name = build_job_name(DAG_ID, PARTITION, fingerprint)
    deadline = time.time() + 120
    while hook.find_job(name) is None or op._live_job is None:
        assert time.time() < deadline and worker.is_alive(), outcome
        time.sleep(0.3)
    wait_for_status(hook, name, {"Running"})
    op.on_kill()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), AzureMLJobFailedError) and "Canceled" in str(outcome["error"])
    assert hook.get_job(name).status == "Canceled"
