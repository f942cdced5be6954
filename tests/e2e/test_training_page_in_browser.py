"""The Edge training page in a real browser: what it shows equals what Airflow, AML and the registry hold.

Headless Chromium logs into the Airflow UI, opens the page from the UI's navigation (the API server
serves it as a plugin app) and reads its table after the e2e runs of tests/e2e/test_edge_training_dag.py.
Each row is compared with its sources, read here through their own APIs: the newest DAG run of the day and
its task results (Airflow's REST API), the job's status (the AML double, through azure-ai-ml), the model
versions and the production tag (the AML registry) and the image digest (the registry's own API). Then a
two-day backfill is started from the page's form and its runs appear on the page; a viewer gets no form,
and Airflow refuses the backfill to that user.
"""

from __future__ import annotations

import datetime as dt

from devstack.airflow_local import VIEWER_USER
from devstack.seed import delete_partition
from edge_training.partitions import partition_date_str
from tests.e2e.support import (
    DAG_ID,
    MODEL_NAME,
    log_in,
    partition_key,
    run_to_completion,
    screenshot,
    wait_backfill,
    wait_backfills_closed,
)

# Days with no data and no other test's runs: the backfill from the form fails each at validate_partition.
BACKFILL_DAYS = ("2026-12-01", "2026-12-02")
ROW_ATTRIBUTES = "els => els.map(e => ({...e.dataset}))"


def run_day(run: dict) -> str | None:
    chosen = (run.get("conf") or {}).get("partition") or run.get("partition_key")
    return partition_date_str(chosen) if chosen else None


def newest_runs_by_day(airflow) -> dict[str, dict]:
    runs = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns?limit=1000&order_by=run_after")["dag_runs"]
    newest: dict[str, dict] = {}
    for run in runs:  # oldest first: the last one of a day wins
        day = run_day(run)
        if day:
            newest[day] = run
    return newest


def result(airflow, run_id: str, task_id: str, key: str = "return_value"):
    try:
        return airflow.xcom(DAG_ID, run_id, task_id, key)
    except Exception:  # noqa: BLE001 - no such XCom (a task that failed or did not run)
        return None


def page_rows(page) -> dict[str, dict]:
    return {row["day"]: row for row in page.eval_on_selector_all("#partitions tr[data-day]", ROW_ATTRIBUTES)}


def production_version(ml_client) -> str | None:
    versions = sorted(ml_client.models.list(name=MODEL_NAME), key=lambda m: int(m.version), reverse=True)
    return next((m.version for m in versions if (m.tags or {}).get("stage") == "production"), None)


def test_the_page_shows_what_the_sources_hold_and_starts_a_backfill(airflow, browser, ml_client, registry):
    newest = newest_runs_by_day(airflow)
    if not any(r["state"] == "success" for r in newest.values()):  # run alone: train one day first
        run_to_completion(airflow, "2026-11-20")
        newest = newest_runs_by_day(airflow)
    trained_days = sorted(newest)
    start, end = trained_days[0], max(trained_days[-1], BACKFILL_DAYS[-1])
    query = f"?start={start}&end={end}"
    page_url = f"{airflow.base_url}/edge-training/{query}"

    # From the UI's navigation: the plugin's page inside Airflow's frame.
    page = log_in(browser, airflow)
    page.goto(f"{airflow.base_url}/plugin/edge-training", wait_until="networkidle")
    frame = page.frame_locator("iframe")
    frame.locator("#partitions").wait_for(timeout=60_000)
    assert frame.locator("#partitions tr[data-day]").count() >= 1

    page.goto(page_url, wait_until="networkidle")
    rows = page_rows(page)
    expected_days = [(dt.date.fromisoformat(end) - dt.timedelta(days=i)).isoformat()
                     for i in range((dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days + 1)]
    assert list(rows) == expected_days  # every day of the range, newest first

    production = production_version(ml_client)
    assert page.inner_text("#production-version") == (production or "none")
    checked_models = 0
    for day, row in rows.items():
        run = newest.get(day)
        if run is None:
            assert row["runState"] == "" and row["flag"] == "no run", row
            continue
        assert row["runState"] == run["state"], (day, row, run)
        partition = result(airflow, run["dag_run_id"], "validate_partition") or {}
        job = result(airflow, run["dag_run_id"], "submit_training") or {}
        model = result(airflow, run["dag_run_id"], "register_model") or {}
        image = result(airflow, run["dag_run_id"], "push_image") or {}
        finding = result(airflow, run["dag_run_id"], "validate_partition", "validation_finding")
        assert row["fingerprint"] == (partition.get("fingerprint") or row["fingerprint"]), (day, row)
        assert row["job"] == (job.get("job_name") or ""), (day, row, job)
        if job.get("job_name"):
            assert row["jobStatus"] == ml_client.jobs.get(job["job_name"]).status, (day, row)
        if finding:
            assert row["flag"] == finding["finding"], (day, row, finding)
        if model.get("version"):
            version = str(model["version"])
            assert row["modelVersion"] == version, (day, row, model)
            assert row["production"] == ("true" if version == production else "false"), (day, row)
            registered = ml_client.models.get(name=MODEL_NAME, version=version)
            assert (registered.tags or {}).get("partition") == day
            if image.get("digest"):
                assert row["digest"] == image["digest"] == registry.digest(MODEL_NAME, version), (day, row)
            checked_models += 1
    assert checked_models >= 1, rows
    screenshot(page, "edge-training-page.png")

    # A two-day backfill from the form, through Airflow's own backfill API with this user's session.
    for day in BACKFILL_DAYS:
        delete_partition(day)
    wait_backfills_closed(airflow)
    page.fill("#backfill-form input[name=from_date]", BACKFILL_DAYS[0])
    page.fill("#backfill-form input[name=to_date]", BACKFILL_DAYS[-1])
    page.select_option("#backfill-form select[name=reprocess_behavior]", "completed")
    page.click("#backfill-form button[type=submit]")
    page.wait_for_selector("#backfill-result[data-backfill-id]", timeout=30_000)
    backfill_id = page.get_attribute("#backfill-result", "data-backfill-id")
    backfill = airflow.api("GET", f"/backfills/{backfill_id}")
    assert backfill["dag_id"] == DAG_ID
    runs = wait_backfill(airflow, {partition_key(d) for d in BACKFILL_DAYS}, timeout=600)
    assert {k: r["state"] for k, r in runs.items()} == {partition_key(d): "failed" for d in BACKFILL_DAYS}
    page.reload(wait_until="networkidle")
    rows = page_rows(page)
    for day in BACKFILL_DAYS:
        assert (rows[day]["runState"], rows[day]["flag"]) == ("failed", "no data"), rows[day]
    wait_backfills_closed(airflow)
    page.close()

    # A viewer reads the page but gets no form, and Airflow itself refuses the backfill to that user.
    viewer = log_in(browser, airflow, VIEWER_USER)
    viewer.goto(page_url, wait_until="networkidle")
    assert viewer.locator("#partitions tr[data-day]").count() == len(expected_days)
    assert viewer.locator("#backfill-form").count() == 0 and viewer.locator("#backfill-not-allowed").count() == 1
    refused = viewer.evaluate(
        """async (body) => (await fetch("/api/v2/backfills", {method: "POST", credentials: "same-origin",
              headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})).status""",
        {"dag_id": DAG_ID, "from_date": f"{BACKFILL_DAYS[0]}T00:00:00Z", "to_date": f"{BACKFILL_DAYS[-1]}T00:00:00Z"},
    )
    assert refused == 403
    viewer.close()
