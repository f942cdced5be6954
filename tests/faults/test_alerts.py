"""Alerts through the real scheduler, triggerer and worker, to the webhook the tests' Airflow is given
(tests/alert_inbox.py): a task that fails for good, and a run still working past its deadline.

Both run side by side with the other cases that watch only their own runs. Their partitions are outside
the seeded month, named through the ``partition`` param on a run keyed by the month's first day.
"""

from __future__ import annotations

import urllib.parse

from devstack.seed import delete_partition
from tests.e2e.support import DAG_ID
from tests.faults.battery import end_run, fresh_partition, job_route, jobs_of, trigger, wait_task
from tests.faults.side_by_side import side_by_side

RUN_KEY = "2026-11-01T00:00:00"
LATE_DATE = "2026-10-20"  # trained slowly: its run misses the deadline
MISSING_DATE = "2026-10-21"  # never written: validate_partition fails


@side_by_side
def test_a_partition_with_no_data_fails_at_once_and_alerts(airflow, battery, alert_inbox):
    delete_partition(MISSING_DATE)
    run_id = trigger(airflow, MISSING_DATE, conf={"partition": MISSING_DATE}, key=RUN_KEY)
    try:
        alert = alert_inbox.wait("task_failed", run_id, timeout=300)
    finally:
        end_run(airflow, run_id)
    ti = airflow.task_instances(DAG_ID, run_id)["validate_partition"]
    task_link = f"/runs/{urllib.parse.quote(run_id)}/tasks/validate_partition"
    passed = ((ti["state"], ti["try_number"]) == ("failed", 1)  # a data error spends no retry
              and alert["partition"] == MISSING_DATE
              and alert["tasks"] == [{"task_id": "validate_partition", "state": "failed"}]
              and alert["error"].startswith("PartitionIncompleteError: ") and MISSING_DATE in alert["error"]
              and task_link in alert["links"].get("Airflow task", ""))
    battery.record("a partition with no data", "bad_input",
                   "validate_partition fails on its first try (no retry); the alert names the partition, "
                   "the task, the error and its link",
                   f"validate_partition {ti['state']} on try {ti['try_number']}; alert: partition "
                   f"{alert['partition']}, tasks {alert['tasks']}, error {alert['error'][:90]!r}", passed)
    assert passed, (ti, alert)


@side_by_side
def test_a_run_past_its_deadline_is_reported_with_the_running_task_and_the_job_link(
        airflow, battery, admin, ml_client, alert_inbox):
    from tests.conftest import RUN_DEADLINE_MINUTES

    date = fresh_partition(LATE_DATE)  # new data: a new job
    fault = admin.add_fault(job_route(date), "slow_job", delay=600)
    run_id = trigger(airflow, date, conf={"partition": date}, key=RUN_KEY)
    try:
        wait_task(airflow, run_id, "submit_training", {"deferred"}, timeout=300)
        alert = alert_inbox.wait("run_deadline_missed", run_id, timeout=RUN_DEADLINE_MINUTES * 60 + 120)
        job_url = airflow.xcom(DAG_ID, run_id, "submit_training", "azureml_job_url")
    finally:
        end_run(airflow, run_id)  # the trigger's on_kill cancels the job
        admin.remove_fault(fault)
    jobs = [j.name for j in jobs_of(ml_client, date)]
    passed = (alert["partition"] == date and {"task_id": "submit_training", "state": "deferred"} in alert["tasks"]
              and bool(job_url) and alert["links"].get("Azure ML job") == job_url
              and "run missed its deadline" in alert["text"])
    battery.record(f"a run still working {RUN_DEADLINE_MINUTES} min after it was queued", "fault",
                   "the deadline alert names the partition, the running task and the AML job's link",
                   f"alert: partition {alert['partition']}, tasks {alert['tasks']}, job link "
                   f"{'matches' if alert['links'].get('Azure ML job') == job_url else 'differs'} "
                   f"(jobs {jobs})", passed)
    assert passed, (alert, job_url)
