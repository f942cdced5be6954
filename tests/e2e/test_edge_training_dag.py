"""The edge_training DAG end to end through a real scheduler, on the local edge stack.

Every effect is checked at its source: the job in the AML double, the model version and its tags,
the manifest in Stack Hub blob storage, the image digest in the registry, and the OpenLineage events the
provider wrote (the tests' Airflow sends them to files, tests/conftest.py).
"""

from __future__ import annotations

import json
import random
import time
from urllib.parse import urlsplit

import pytest

from devstack.aml.admin import AmlDoubleAdmin
from devstack.seed import delete_partition, seed_partition
from tests.e2e.support import (
    DAG_ID,
    MODEL_NAME,
    VMLoadSampler,
    backfill_runs,
    jobs_for_partition,
    model_versions_for_partition,
    openlineage_task_events,
    partition_key,
    run_to_completion,
    stackhub_container,
    wait_backfill,
    wait_backfills_closed,
)

ONE_PARTITION = "2026-11-20"
# Six days through a 2-slot edge_vm pool: five train, one is missing.
BACKFILL = [f"2026-11-0{d}" for d in range(2, 8)]
MISSING = "2026-11-04"
POOL_SLOTS = 2  # LocalAirflow's edge_vm pool
# Each job works this long on the VM (the AML double's slow_job fault), so the runs' trainings overlap.
JOB_SECONDS = 15


# A training window: three days, trained by one run keyed at the last (the window_days param).
WINDOW = ["2026-12-10", "2026-12-11", "2026-12-12"]


@pytest.fixture(scope="module")
def window_run(airflow) -> tuple[str, dict[str, int]]:
    """A window_days=3 run, started (not awaited) with fresh data for each day: (run id, rows per day).
    one_partition_run starts it first, so the two trainings share the edge_vm pool's two slots."""
    rows = {day: 300 + random.randrange(300) for day in WINDOW}
    for day, count in rows.items():
        seed_partition(day, rows=count)
    run_id = f"e2e__window__{int(time.time() * 1000)}"
    airflow.trigger(DAG_ID, partition_key=partition_key(WINDOW[-1]), run_id=run_id, conf={"window_days": 3})
    return run_id, rows


@pytest.fixture(scope="module")
def one_partition_run(airflow, window_run):
    """One run of ONE_PARTITION through the scheduler: (run id, run, task instances). The happy path and
    the lineage test look at the same run."""
    return run_to_completion(airflow, ONE_PARTITION)


def test_one_partition_trains_registers_and_ships_an_image(airflow, ml_client, registry, stack_env,
                                                           one_partition_run):
    run_id, run, tis = one_partition_run
    states = {t: ti["state"] for t, ti in tis.items()}
    assert run["state"] == "success", states
    assert set(states.values()) == {"success"}, states

    summary = airflow.xcom(DAG_ID, run_id, "summary")
    assert summary["partition"] == ONE_PARTITION
    assert summary["status"] == "success"

    # The AML job: exactly one for this partition and data, Completed, tagged with its lineage.
    job = ml_client.jobs.get(summary["aml_job"])
    assert job.status == "Completed"
    assert job.tags["partition"] == ONE_PARTITION
    assert job.tags["data_fingerprint"] == summary["data_fingerprint"]
    same_data = [j for j in jobs_for_partition(ml_client, ONE_PARTITION)
                 if j.tags.get("data_fingerprint") == summary["data_fingerprint"]]
    assert [j.name for j in same_data] == [job.name]

    # The model version and its tags.
    name, version = summary["model"].split(":")
    assert name == MODEL_NAME
    model = ml_client.models.get(name=name, version=version)
    assert model.tags["partition"] == ONE_PARTITION
    assert model.tags["job_name"] == job.name
    assert model.tags["data_fingerprint"] == summary["data_fingerprint"]
    assert model.tags["dag_id"] == DAG_ID
    assert model.tags.get("git_commit")
    assert model.tags["image"] == summary["image"]

    # The manifest beside the data in Stack Hub (it never leaves the account).
    container = stackhub_container(stack_env)
    manifest = json.loads(
        container.download_blob(f"telemetry/date={ONE_PARTITION}/_manifest.json").readall()
    )
    assert manifest["fingerprint"]["value"] == summary["data_fingerprint"]
    assert {f["name"].rsplit("/", 1)[-1] for f in manifest["files"]} >= {"part-00000.csv"}

    # The image: the registry's digest for the version tag is the one the DAG reported.
    repository, digest = summary["image"].split("/", 1)[1].split("@")
    assert registry.digest(repository, version) == digest

    # Operators see the AML job's own log in the training task's log, and a link to the job.
    log = airflow.task_log(DAG_ID, run_id, "submit_training", tis["submit_training"]["try_number"])
    assert job.name in log and "train.py" in log, log[-3000:]
    links = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/submit_training/links")
    assert any(job.name in (url or "") for url in links["extra_links"].values()), links


def test_the_scheduler_imported_the_task_modules_before_its_workers_started(airflow, one_partition_run):
    """The tests' Airflow runs edge_training.executors.PreloadingLocalExecutor (as the demo's does): its start
    imports the SDKs in the scheduler before the LocalExecutor forks its workers, which the run's tasks then
    inherit (tests/unit/test_preloading_executor.py checks the order inside start; bench/overhead.py the gain)."""
    log = airflow.ctx.log_file(airflow._pid_name("scheduler")).read_text(errors="replace")
    preloaded = log.rfind("modules for the task processes before forking the workers")  # the latest start
    assert preloaded != -1, "the scheduler's log has no preload line: is the executor the preloading one?"
    assert "Worker starting up" in log[preloaded:], "no LocalExecutor worker started after the preload"


@pytest.mark.parametrize(("component", "preloaded_line", "started_line"), [
    ("triggerer", "modules for the trigger runner before starting the triggerer", "Starting the triggerer"),
    ("dag-processor", "modules for the DAG file parses before starting the dag-processor",
     "Processing files using up to"),
])
def test_the_component_imported_its_modules_before_it_started(airflow, one_partition_run, component, preloaded_line,
                                                               started_line):
    """The tests' triggerer and dag-processor run through edge_training.preloading (as the demo's do): the
    modules of the processes they fork (trigger runner, DAG file parses) are imported before Airflow's command
    starts (tests/unit/test_preloading.py checks the order; bench/overhead.py the gain)."""
    log = airflow.ctx.log_file(airflow._pid_name(component)).read_text(errors="replace")
    preloaded = log.rfind(preloaded_line)  # the latest start
    assert preloaded != -1, f"the {component}'s log has no preload line: is it started through the entry point?"
    assert started_line in log[preloaded:], f"Airflow's {component} did not start after the preload"


def test_a_three_day_window_trains_once_with_one_job_that_reads_the_three_days(airflow, ml_client, registry,
                                                                             window_run):
    run_id, rows = window_run
    run = airflow.wait_run(DAG_ID, run_id, timeout=1200)
    tis = airflow.task_instances(DAG_ID, run_id)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    window = airflow.xcom(DAG_ID, run_id, "validate_partition")
    summary = airflow.xcom(DAG_ID, run_id, "summary")
    assert (window["data_days"], window["missing_days"], window["window_days"]) == (",".join(WINDOW), "", 3)
    assert summary["data_fingerprint"] == window["fingerprint"]
    assert window["fingerprint"] not in {day["fingerprint"] for day in window["partitions"]}

    # One job for the window's data, keyed at its last day; its inputs are the three days.
    fingerprint = window["fingerprint"]
    jobs = [j for j in jobs_for_partition(ml_client, WINDOW[-1]) if j.tags.get("data_fingerprint") == fingerprint]
    assert [j.name for j in jobs] == [summary["aml_job"]]
    job = ml_client.jobs.get(summary["aml_job"])
    assert job.tags["data_days"] == ",".join(WINDOW)
    paths = {name: str(getattr(value, "path", value)) for name, value in job.inputs.items()}
    assert paths == {"data_2026_12_10": window["partitions"][0]["data_uri"],
                     "data_2026_12_11": window["partitions"][1]["data_uri"],
                     "data": window["partitions"][2]["data_uri"]}, paths
    assert all(f"date={day}/" in paths[name] for day, name in zip(WINDOW, ["data_2026_12_10", "data_2026_12_11",
                                                                          "data"]))
    # The job really read the three days: its own report, streamed into the task's log, counts their rows.
    log = airflow.task_log(DAG_ID, run_id, "submit_training", tis["submit_training"]["try_number"])
    report = json.loads(log.split("train.py: wrote", 1)[1].split(": ", 1)[1].splitlines()[0])
    assert report["input_folders"] == 3, report
    assert report["rows_train"] + report["rows_test"] == sum(rows.values()), (report, rows)

    # The model's tags and the image's labels name the same days.
    name, version = summary["model"].split(":")
    model = ml_client.models.get(name=name, version=version)
    assert (model.tags["data_days"], model.tags["missing_days"]) == (",".join(WINDOW), "")
    assert model.tags["data_fingerprint"] == window["fingerprint"]
    repository = summary["image"].split("/", 1)[1].split("@")[0]
    labels = registry.labels(repository, version)
    assert labels["org.edge-training.data.days"] == ",".join(WINDOW)
    assert labels["org.edge-training.data.fingerprint"] == window["fingerprint"]


def test_the_runs_openlineage_events_name_the_partition_the_model_version_and_the_image(
    airflow, ml_client, registry, stack_env, one_partition_run
):
    """The COMPLETE events of the run's tasks name exactly three datasets: the Stack Hub partition (with the
    run's fingerprint), the AML model version and the image (the registry's digest). The AML job, if this
    run submitted it, names this run's submit_training as its OpenLineage parent."""
    from tests.conftest import OPENLINEAGE_NAMESPACE

    run_id, run, tis = one_partition_run
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    partition = airflow.xcom(DAG_ID, run_id, "validate_partition")
    model = airflow.xcom(DAG_ID, run_id, "register_model")
    image = airflow.xcom(DAG_ID, run_id, "push_image")
    summary = airflow.xcom(DAG_ID, run_id, "summary")

    events = openlineage_task_events(airflow, run_id, until_complete=set(tis))
    complete = [e for e in events if e["eventType"] == "COMPLETE"]
    assert {e["job"]["name"] for e in complete} == {f"{DAG_ID}.{t}" for t in tis}
    assert {e["job"]["namespace"] for e in events} == {OPENLINEAGE_NAMESPACE}

    # The names, built here from the stack's own settings, not from the code under test.
    conn = dict(part.split("=", 1) for part in stack_env["EDGE_STACKHUB_CONNECTION_STRING"].split(";") if part)
    account_host = f"{conn['AccountName']}.blob.{conn['EndpointSuffix'].split(':')[0]}"
    partition_ds = (f"wasbs://training@{account_host}", f"telemetry/date={ONE_PARTITION}")
    workspace = (f"azureml://subscriptions/{ml_client.subscription_id}/resourcegroups/"
                 f"{ml_client.resource_group_name}/workspaces/{ml_client.workspace_name}")
    model_ds = (workspace, f"models/{MODEL_NAME}/versions/{model['version']}")
    registry_host = urlsplit(registry.base).netloc
    digest = registry.digest(MODEL_NAME, model["version"])
    image_ds = (f"oci://{registry_host}", f"{MODEL_NAME}@{digest}")

    datasets = {(d["namespace"], d["name"]): d for e in complete for d in e["inputs"] + e["outputs"]}
    assert set(datasets) == {partition_ds, model_ds, image_ds}, sorted(datasets)
    by_task = {e["job"]["name"].split(".", 1)[1]: e for e in complete}
    assert [(d["namespace"], d["name"]) for d in by_task["validate_partition"]["inputs"]] == [partition_ds]
    assert [(d["namespace"], d["name"]) for d in by_task["register_model"]["inputs"]] == [partition_ds]
    assert [(d["namespace"], d["name"]) for d in by_task["register_model"]["outputs"]] == [model_ds]
    assert [(d["namespace"], d["name"]) for d in by_task["push_image"]["outputs"]] == [image_ds]
    partition_facets = datasets[partition_ds]["facets"]
    assert partition_facets["edgeTraining_partition"]["fingerprint"] == partition["fingerprint"]
    assert partition_facets["version"]["datasetVersion"] == partition["fingerprint"] == summary["data_fingerprint"]
    assert datasets[model_ds]["facets"]["version"]["datasetVersion"] == model["version"]
    assert datasets[image_ds]["facets"]["version"]["datasetVersion"] == image["digest"] == digest

    # The AML job's parent: this run's submit_training (a job reused from an earlier session names that one).
    job = ml_client.jobs.get(summary["aml_job"])
    if job.tags.get("run_id") == run_id:
        env = job.environment_variables or {}
        submit_runs = {e["run"]["runId"] for e in events if e["job"]["name"] == f"{DAG_ID}.submit_training"}
        dag_run_ids = {e["run"]["facets"]["parent"]["run"]["runId"] for e in events}
        assert env.get("OPENLINEAGE_PARENT_RUN_ID") in submit_runs, env
        assert env["OPENLINEAGE_PARENT_ID"] == (
            f"{OPENLINEAGE_NAMESPACE}/{DAG_ID}.submit_training/{env['OPENLINEAGE_PARENT_RUN_ID']}")
        assert env["OPENLINEAGE_ROOT_PARENT_ID"].rsplit("/", 1)[1] in dag_run_ids, env


def test_a_second_run_of_the_same_partition_duplicates_nothing(airflow, ml_client, registry):
    jobs_before = {j.name for j in jobs_for_partition(ml_client, ONE_PARTITION)}
    models_before = {m.version for m in model_versions_for_partition(ml_client, ONE_PARTITION)}
    tags_before = set(registry.tags(MODEL_NAME))

    run_id, run, tis = run_to_completion(airflow, ONE_PARTITION)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}

    assert {j.name for j in jobs_for_partition(ml_client, ONE_PARTITION)} == jobs_before
    assert {m.version for m in model_versions_for_partition(ml_client, ONE_PARTITION)} == models_before
    assert set(registry.tags(MODEL_NAME)) == tags_before


def test_backfill_with_a_missing_partition_then_reprocess_failed(airflow, ml_client, registry, stack_env):
    """Also proves the edge VM bound: the AML double's jobs in flight and the job containers on the VM's
    Docker, sampled every half second through the backfill, never exceed the edge_vm pool's 2 slots
    (deferred trainings included), and reach it."""
    pool = {p["name"]: p for p in airflow.api("GET", "/pools")["pools"]}["edge_vm"]
    assert (pool["slots"], pool["include_deferred"]) == (POOL_SLOTS, True), pool
    # Fresh data for these days (a new fingerprint each session), and one day missing.
    rows = 1500 + random.randrange(3000)
    for date in BACKFILL:
        seed_partition(date, rows=rows)
    delete_partition(MISSING)
    jobs_before = {d: {j.name for j in jobs_for_partition(ml_client, d)} for d in BACKFILL}
    keys = {partition_key(d) for d in BACKFILL}
    trained_days = [d for d in BACKFILL if d != MISSING]
    admin = AmlDoubleAdmin.from_env(stack_env)
    assert admin.jobs_in_flight() == 0, "another test left a job running on the VM"

    wait_backfills_closed(airflow)
    sampler = VMLoadSampler(admin, stack_env["EDGE_DOCKER_HOST"])
    sampler.start()
    try:
        with admin.injected("PUT job", "slow_job", delay=JOB_SECONDS):
            airflow.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", BACKFILL[0],
                            "--to-date", BACKFILL[-1], "--max-active-runs", str(len(BACKFILL)))
            runs = wait_backfill(airflow, keys)
    finally:
        sampler.stop()
    states = {k: r["state"] for k, r in runs.items()}
    assert states == {k: ("failed" if k == partition_key(MISSING) else "success") for k in keys}, states

    assert len(sampler.samples) > 60 and not sampler.errors, (len(sampler.samples), sampler.errors[:3])
    peak_jobs = max(s[1] for s in sampler.samples)
    peak_containers = max(s[2] for s in sampler.samples)
    assert peak_jobs <= POOL_SLOTS, f"the AML double ran {peak_jobs} jobs at once; the edge_vm pool has {POOL_SLOTS}"
    assert peak_containers <= POOL_SLOTS, f"the VM ran {peak_containers} job containers at once"
    # The pool is what limits, not a backfill that happened to run one training at a time.
    assert peak_jobs == POOL_SLOTS, f"never more than {peak_jobs} job at once: the sample shows no concurrency"

    missing_run = runs[partition_key(MISSING)]
    tis = airflow.task_instances(DAG_ID, missing_run["dag_run_id"])
    assert tis["validate_partition"]["state"] == "failed"
    assert tis["submit_training"]["state"] == "upstream_failed"
    log = airflow.task_log(DAG_ID, missing_run["dag_run_id"], "validate_partition",
                           tis["validate_partition"]["try_number"])
    assert f"date={MISSING}" in log, log[-2000:]
    assert {j.name for j in jobs_for_partition(ml_client, MISSING)} == jobs_before[MISSING], \
        "an AML job was submitted for a partition that failed validation"
    trained = {d: {j.name for j in jobs_for_partition(ml_client, d)} - jobs_before[d] for d in trained_days}
    assert all(len(new) == 1 for new in trained.values()), trained
    tags_after_first = set(registry.tags(MODEL_NAME))
    models_after_first = {d: {m.version for m in model_versions_for_partition(ml_client, d)}
                          for d in BACKFILL}

    # The data lands; a re-run of the backfill with reprocess=failed trains only that day.
    seed_partition(MISSING, rows=rows)
    wait_backfills_closed(airflow)
    airflow.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", BACKFILL[0],
                    "--to-date", BACKFILL[-1], "--reprocess-behavior", "failed")
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        runs = backfill_runs(airflow, keys)
        if runs[partition_key(MISSING)]["state"] in ("success", "failed") and \
                runs[partition_key(MISSING)]["dag_run_id"] != missing_run["dag_run_id"] or \
                runs[partition_key(MISSING)]["state"] == "success":
            break
        time.sleep(5)
    assert runs[partition_key(MISSING)]["state"] == "success", runs

    new_missing = {j.name for j in jobs_for_partition(ml_client, MISSING)} - jobs_before[MISSING]
    assert len(new_missing) == 1, new_missing
    for date in trained_days:
        assert {j.name for j in jobs_for_partition(ml_client, date)} - jobs_before[date] == trained[date]
        assert {m.version for m in model_versions_for_partition(ml_client, date)} == models_after_first[date]
    assert len({m.version for m in model_versions_for_partition(ml_client, MISSING)}
               - models_after_first[MISSING]) == 1
    new_tags = set(registry.tags(MODEL_NAME)) - tags_after_first
    assert len([t for t in new_tags if not t.startswith("fp-")]) == 1, new_tags


# Three days queued for a 1-slot edge_vm pool that opens only once all three trainings wait for it.
QUEUE = ["2026-10-11", "2026-10-12", "2026-10-13"]
QUEUE_JOB_SECONDS = 10


def _instant(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def test_the_edge_vm_serves_the_oldest_run_first_and_a_finished_training_before_newer_runs(airflow, stack_env):
    """The edge_vm pool serves runs in the order they were created (edge_training.pool_order, through the
    real scheduler): with one slot and three trainings waiting for it, the jobs run oldest run first, and a
    training whose job ended (its last step needs the slot again) ends before the next run's job starts.
    Without the policy the runs' weights tie and the scheduler's pick between them is arbitrary (they have
    no logical_date): it came out right by chance in a run without it, so the weights in the scheduler's
    database are checked first; the order then shows they point the right way."""
    from edge_training.hooks.azureml import AzureMLHook

    for date in QUEUE:
        seed_partition(date, rows=1500 + random.randrange(3000))  # fresh data: no job to reuse
    keys = {partition_key(d) for d in QUEUE}
    assert AmlDoubleAdmin.from_env(stack_env).jobs_in_flight() == 0, "another test left a job running on the VM"
    wait_backfills_closed(airflow)
    airflow.set_edge_vm_slots(0)
    try:
        airflow.api("POST", "/backfills", {
            "dag_id": DAG_ID, "from_date": f"{QUEUE[0]}T00:00:00Z", "to_date": f"{QUEUE[-1]}T00:00:00Z",
            "max_active_runs": len(QUEUE), "dag_run_conf": {"min_training_seconds": QUEUE_JOB_SECONDS},
        })
        deadline, waiting = time.monotonic() + 300, {}
        while time.monotonic() < deadline:
            runs = backfill_runs(airflow, keys)
            waiting = {k: airflow.task_instances(DAG_ID, r["dag_run_id"]).get("submit_training", {}).get("state")
                       for k, r in runs.items()}
            if len(waiting) == len(QUEUE) and set(waiting.values()) == {"scheduled"}:
                break
            time.sleep(2)
        assert set(waiting.values()) == {"scheduled"} and len(waiting) == len(QUEUE), waiting
    finally:
        airflow.set_edge_vm_slots(1)
    try:
        runs = wait_backfill(airflow, keys, timeout=900)
    finally:
        airflow.set_edge_vm_slots(POOL_SLOTS)
    assert {k: r["state"] for k, r in runs.items()} == dict.fromkeys(keys, "success"), runs

    trainings, jobs = [], []
    with AzureMLHook(azureml_conn_id="azureml_default") as hook:
        for date in QUEUE:  # the backfill creates its runs in date order
            run_id = runs[partition_key(date)]["dag_run_id"]
            trainings.append(airflow.task_instances(DAG_ID, run_id)["submit_training"])
            jobs.append(hook.get_run_info(airflow.xcom(DAG_ID, run_id, "submit_training")["job_name"]))
    weights = [ti["priority_weight"] for ti in trainings]
    assert weights == sorted(weights, reverse=True) and len(set(weights)) == len(weights), weights
    starts = [_instant(job.started_at) for job in jobs]
    assert starts == sorted(starts), f"the jobs of {QUEUE} started at {starts}: not oldest run first"
    for date, training, next_date, next_start in zip(QUEUE, trainings, QUEUE[1:], starts[1:]):
        ended = _instant(training["end_date"])
        assert ended < next_start, (
            f"{date}'s training ended {ended - next_start:.1f} s after {next_date}'s job started: "
            "a newer run took the edge_vm slot before the finished training's last step")
