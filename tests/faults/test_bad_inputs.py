"""Bad inputs through the DAG's params, partition keys and data: each gets a clear error naming the
object, what was expected and what was found; no AML job is submitted and nothing is written to Stack
Hub. The runs start together (they do not interfere) and each case then reads its own outcome.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from devstack.seed import delete_partition, seed_partition
from tests.e2e.support import DAG_ID, stackhub_container
from tests.faults.battery import BATTERY, TERMINAL_RUN, job_puts_since, quoted, task_log, trigger

KIND = "bad_input"
NO_JOB = "no AML job; Stack Hub unchanged"
# submit_training's state when an upstream task failed, or when the run was ended during a retry wait.
NEVER_RAN = ("upstream_failed", "skipped", "removed", None)

# name -> (bad value, text the refusal must hold). Each is tried both as the run's partition key and as the
# `partition` param of a run with a good key.
PARTITION_KEYS = {
    "partition key with traversal": ("../../2026-11-01", "contains a '..'"),
    "percent-encoded partition key": ("2026-11-01%2F..%2Fsecrets", "percent-encoding"),
    "partition key with control characters": ("2026-11-01\r\nx", "partition key"),
    "look-alike (full-width) partition key": ("２０２６-11-01", "Unicode compatibility characters"),
}
DRIFT_DATE, EMPTY_DATE, IMAGE_DATE, DISK_DATE = "2026-11-19", "2026-11-21", "2026-11-22", "2026-11-23"
# A three-day training window (window_days=3) ending WINDOW_END whose middle day has no data. The days that
# validate get their manifests (as any validated day does), so they are not among OWN_DATES' unchanged blobs.
WINDOW_DAYS, WINDOW_GAP = ("2026-12-20", "2026-12-21", "2026-12-22"), "2026-12-21"


def write_drifted_partition(container, date: str) -> None:
    """A partition whose parts carry renamed columns (an upstream schema change)."""
    prefix = f"telemetry/date={date}/"
    for blob in container.list_blobs(name_starts_with=prefix):
        container.delete_blob(blob.name)
    rows = [f"dev-{i},2026-01-01T00:00:00,21.5,0.3,101.2,1500,{i},0" for i in range(50)]
    body = "device_id,timestamp,temp_celsius,vibration_mm_s,pressure_kpa,rpm,runtime_hours,failure\n" + "\n".join(rows)
    container.upload_blob(prefix + "part-00000.csv", body.encode(), overwrite=True)
    container.upload_blob(prefix + "_SUCCESS", b"", overwrite=True)


def write_empty_partition(container, date: str) -> None:
    """A partition marked complete whose only data part is empty."""
    prefix = f"telemetry/date={date}/"
    for blob in container.list_blobs(name_starts_with=prefix):
        container.delete_blob(blob.name)
    container.upload_blob(prefix + "part-00000.csv", b"", overwrite=True)
    container.upload_blob(prefix + "_SUCCESS", b"", overwrite=True)


#: The partitions the bad inputs point at (the partition-key cases' good key is KEY_DATE).
KEY_DATE = "2026-11-01"
OWN_DATES = (KEY_DATE, DRIFT_DATE, EMPTY_DATE, IMAGE_DATE, DISK_DATE)
PARTITION_LAYOUT = re.compile(r"^telemetry/date=\d{4}-\d{2}-\d{2}/[^/]+$")


def stackhub_snapshot(container) -> dict[str, str]:
    """The etags of every blob a bad input could write: those of its own partitions, and any outside the
    partition layout (where a traversal would land). Other cases' partitions change meanwhile."""
    return {b.name: str(b.etag) for b in container.list_blobs()
            if not PARTITION_LAYOUT.match(b.name) or any(f"date={d}/" in b.name for d in OWN_DATES)}


@pytest.fixture(scope="module")
def outcomes(airflow, battery, stack_env, admin, trained_partition):
    """Start every bad-input run at once, wait for all, and return what each one did.

    The connection cases' partition trains meanwhile (``trained_partition``), and so do the side-by-side
    cases' partitions: their jobs are not counted.
    """
    container = stackhub_container(stack_env)
    write_drifted_partition(container, DRIFT_DATE)
    write_empty_partition(container, EMPTY_DATE)
    for date in (IMAGE_DATE, DISK_DATE):
        seed_partition(date, rows=1500 + random.randrange(400))
    for date in WINDOW_DAYS:
        seed_partition(date, rows=300 + random.randrange(300))
    delete_partition(WINDOW_GAP)
    before = stackhub_snapshot(container)
    since = time.time()

    runs: dict[str, str] = {}
    refusals: dict[str, str] = {}
    for name, (value, _) in PARTITION_KEYS.items():
        for path, kwargs in (("key", {"key": value}), ("param", {"conf": {"partition": value}})):
            try:
                runs[f"{name} ({path})"] = trigger(airflow, KEY_DATE, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a refusal at the door is one of the outcomes
                refusals[f"{name} ({path})"] = str(exc)
    runs["schema-drifted partition"] = trigger(airflow, DRIFT_DATE)
    runs["empty partition"] = trigger(airflow, EMPTY_DATE)
    runs["environment image absent on the VM"] = trigger(
        airflow, IMAGE_DATE, conf={"environment_image": "edge-training-base:absent"})
    runs["VM disk under the threshold"] = trigger(airflow, DISK_DATE, conf={"min_disk_gib": 1_000_000})
    runs["training window with a missing day"] = trigger(airflow, WINDOW_DAYS[-1], conf={"window_days": 3})

    # A case is decided by its first failed try: a run whose check would only be retried (readiness
    # failures are, as the VM may recover) is then ended through the API, as an operator would.
    deadline = time.monotonic() + 600
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for name, run_id in runs.items():
            if states.get(name) in TERMINAL_RUN:
                continue
            states[name] = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{quoted(run_id)}")["state"]
            tis = airflow.task_instances(DAG_ID, run_id)
            if any(ti["state"] == "up_for_retry" for ti in tis.values()):
                airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{quoted(run_id)}", {"state": "failed"})
                states[name] = "failed"
        if all(s in TERMINAL_RUN for s in states.values()):
            break
        time.sleep(2)
    return {
        "runs": runs,
        "states": states,
        "refusals": refusals,
        "stackhub_changed": sorted(set(stackhub_snapshot(container).items()) ^ set(before.items())),
        # Every other case's partition is in BATTERY.dates before its run is triggered.
        "job_puts": job_puts_since(admin, since, except_dates=tuple(BATTERY.dates - set(OWN_DATES))),
    }


def check_refused(airflow, battery, outcomes, name: str, task_id: str, must_say: list[str]) -> None:
    run_id = outcomes["runs"][name]
    tis = airflow.task_instances(DAG_ID, run_id)
    state = outcomes["states"][name]
    log = task_log(airflow, run_id, task_id) if tis.get(task_id) else ""
    said = [text for text in must_say if text in log]
    error_lines = [line for line in log.splitlines() if "Error" in line or "error" in line][-1:]
    observed = (f"run {state}; {task_id} {tis.get(task_id, {}).get('state')}; "
                f"submit_training {tis.get('submit_training', {}).get('state')}; "
                f"error: {(error_lines[0] if error_lines else 'none')[:160]}")
    # A readiness failure is retried (the VM may recover): the case ends the run during the retry wait,
    # which leaves the task skipped; its first try's error is what the case reads.
    passed = (state == "failed" and tis[task_id]["state"] in ("failed", "up_for_retry", "skipped")
              and tis["submit_training"]["state"] in NEVER_RAN
              and len(said) == len(must_say) and outcomes["job_puts"] == 0 and not outcomes["stackhub_changed"])
    battery.record(name, KIND, f"{task_id} fails naming {', '.join(must_say)}; {NO_JOB}", observed, passed)
    assert passed, (observed, must_say, said, outcomes["job_puts"], outcomes["stackhub_changed"][:5], log[-3000:])


@pytest.mark.parametrize("name", list(PARTITION_KEYS))
def test_bad_partition_key_is_refused(airflow, battery, outcomes, name):
    """Refused either by Airflow at the trigger (400 naming the value) or by validate_partition."""
    value, says = PARTITION_KEYS[name]
    observed, passed = [], True
    for path in ("key", "param"):
        case = f"{name} ({path})"
        if case in outcomes["refusals"]:
            refusal = outcomes["refusals"][case]
            ok = " 400:" in refusal and "partition" in refusal.lower()
            observed.append(f"as {path}: trigger refused, 400: {refusal.split(' 400: ', 1)[-1][:100]}")
        else:
            run_id = outcomes["runs"][case]
            tis = airflow.task_instances(DAG_ID, run_id)
            log = task_log(airflow, run_id, "validate_partition") if tis.get("validate_partition") else ""
            ok = (outcomes["states"][case] == "failed" and tis["validate_partition"]["state"] == "failed"
                  and tis["submit_training"]["state"] in NEVER_RAN and says in log)
            observed.append(f"as {path}: run {outcomes['states'][case]}, validate_partition "
                            f"{tis['validate_partition']['state']}{', says ' + repr(says) if says in log else ''}")
        passed = passed and ok
    passed = passed and outcomes["job_puts"] == 0 and not outcomes["stackhub_changed"]
    battery.record(name, KIND, f"refused at the trigger or by validate_partition naming it; {NO_JOB}",
                   "; ".join(observed), passed)
    assert passed, (observed, outcomes["job_puts"], outcomes["stackhub_changed"][:5])


def test_schema_drifted_partition_is_refused(airflow, battery, outcomes):
    check_refused(airflow, battery, outcomes, "schema-drifted partition", "validate_partition",
                  ["part-00000.csv", "temperature_c", "temp_celsius"])


def test_empty_partition_is_refused(airflow, battery, outcomes):
    check_refused(airflow, battery, outcomes, "empty partition", "validate_partition",
                  ["zero-byte", f"date={EMPTY_DATE}"])


def test_environment_image_absent_on_the_vm_is_refused(airflow, battery, outcomes):
    check_refused(airflow, battery, outcomes, "environment image absent on the VM", "check_edge_vm",
                  ["edge-training-base:absent"])


def test_disk_under_threshold_is_refused(airflow, battery, outcomes):
    check_refused(airflow, battery, outcomes, "VM disk under the threshold", "check_edge_vm", ["disk"])


def test_a_training_window_with_a_missing_day_is_refused_naming_the_day(airflow, battery, outcomes):
    check_refused(airflow, battery, outcomes, "training window with a missing day", "validate_partition",
                  ["training window of 3 days ending 2026-12-22", f"{WINDOW_GAP}: ", "at least 3 usable days"])
