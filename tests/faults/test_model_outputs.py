"""Bad model outputs: the job completes, but what it wrote is not what the gate can read.

The AML double's ``job_epilogue`` fault runs a command after the training script, inside the job's
container, to take metrics.json away or to write a NaN into it (as a buggy script would). The gate must
fail at once (no retry can change a finished job's output) naming the job, the file or metric, and what
it found; no model version is registered and no image is built.
"""

from __future__ import annotations

import time

from tests.e2e.support import DAG_ID
from tests.faults.battery import (
    end_run,
    fresh_partition,
    job_route,
    jobs_of,
    task_log,
    trigger,
    versions_of,
    wait_task,
)
from tests.faults.side_by_side import side_by_side

KIND = "bad_input"
METRICS = '"$AZURE_ML_OUTPUT_model/metrics.json"'
# name -> (partition, command run after the training script, texts the gate's error must hold)
CASES = {
    "a model output without metrics.json": (
        "2026-11-20", f"rm -f {METRICS}", ["expected metrics.json in output 'model'", "model.joblib"]),
    "a model output with a NaN metric": (
        "2026-11-30", f"sed -i -E 's/(\"roc_auc\": )[^,}}]+/\\1NaN/' {METRICS} && grep -q NaN {METRICS}",
        ["metric 'roc_auc' must be a number, found NaN"]),
}


@side_by_side
def test_bad_model_output_fails_the_gate_without_a_model(airflow, battery, admin, ml_client):
    since = time.time()
    runs, faults = {}, []
    try:
        for name, (date, command, _) in CASES.items():
            fresh_partition(date)
            faults.append(admin.add_fault(job_route(date), "job_epilogue", command=command))
            runs[name] = trigger(airflow, date)
        tis = {name: wait_task(airflow, run_id, "evaluate_gate", {"failed", "up_for_retry", "success"}, timeout=600)
               for name, run_id in runs.items()}
    finally:
        for fault in faults:
            admin.remove_fault(fault)
        for run_id in runs.values():
            end_run(airflow, run_id)
    failures = []
    for name, (date, _, must_say) in CASES.items():
        log = task_log(airflow, runs[name], "evaluate_gate")
        jobs = jobs_of(ml_client, date, since)
        versions = versions_of(ml_client, date, since)
        downstream = airflow.task_instances(DAG_ID, runs[name])
        built = downstream.get("build_image", {}).get("state")
        said = [text for text in must_say if text in log]
        error = next((line.strip() for line in reversed(log.splitlines()) if "Error:" in line), "none")
        passed = (tis[name]["state"] == "failed" and tis[name]["try_number"] == 1 and len(said) == len(must_say)
                  and any(j.name in log for j in jobs) and not versions and built != "success")
        battery.record(name, KIND,
                       "evaluate_gate fails at once naming the job and what it found; no model version, no image",
                       f"evaluate_gate {tis[name]['state']} on try {tis[name]['try_number']}; jobs {len(jobs)}; "
                       f"model versions {len(versions)}; build_image {built}; error: {error[:170]}", passed)
        if not passed:
            failures.append((name, tis[name]["state"], must_say, said, log[-2500:]))
    assert not failures, failures

