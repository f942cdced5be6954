"""Alerts through the real scheduler and worker, to the webhook the tests' Airflow is given
(tests/alert_inbox.py): a task that fails for good.

It runs side by side with the other cases that watch only their own runs. Its partition is outside the
seeded month, named through the ``partition`` param on a run keyed by the month's first day.
(Run deadlines are refused on Airflow 3.3.2, see ``edge_training.notifications.alerts.run_deadline``.)
"""

from __future__ import annotations

import urllib.parse

from devstack.seed import delete_partition
from tests.e2e.support import DAG_ID
from tests.faults.battery import end_run, trigger
from tests.faults.side_by_side import side_by_side

RUN_KEY = "2026-11-01T00:00:00"
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
              and alert["error"].startswith("PartitionMissingError: ") and MISSING_DATE in alert["error"]
              and task_link in alert["links"].get("Airflow task", ""))
    battery.record("a partition with no data", "bad_input",
                   "validate_partition fails on its first try (no retry); the alert names the partition, "
                   "the task, the error and its link",
                   f"validate_partition {ti['state']} on try {ti['try_number']}; alert: partition "
                   f"{alert['partition']}, tasks {alert['tasks']}, error {alert['error'][:90]!r}", passed)
    assert passed, (ti, alert)
