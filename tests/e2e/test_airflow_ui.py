"""A person's view: headless Chromium logs into the Airflow UI and reads a training run.

Debian's chromium driven by Playwright (tests/e2e/conftest.py). Screenshots go to .devstack/screenshots
(and to docs/ with EDGE_UPDATE_SCREENSHOTS=1, which is how docs/airflow-ui-*.png were made).
"""

from __future__ import annotations

from tests.e2e.support import DAG_ID, log_in, run_to_completion, screenshot

PARTITION = "2026-11-20"


def test_ui_shows_the_aml_job_link_and_the_jobs_log(airflow, browser):
    run_id, run, tis = run_to_completion(airflow, PARTITION)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    job_name = airflow.xcom(DAG_ID, run_id, "submit_training")["job_name"]

    page = log_in(browser, airflow)

    # The task's log tab shows the AML job's own log lines.
    task_url = f"{airflow.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/submit_training"
    page.goto(task_url, wait_until="networkidle")
    page.get_by_text(f"[{job_name}]").first.wait_for(timeout=30_000)
    assert page.get_by_text("train.py").count() >= 1
    screenshot(page, "airflow-ui-training-log.png")

    # The details tab carries the extra link to the job in AML studio.
    page.goto(f"{task_url}/details", wait_until="networkidle")
    link = page.get_by_role("link", name="Azure ML job")
    link.wait_for(timeout=30_000)
    href = link.get_attribute("href")
    assert href and job_name in href and "/studio/jobs/" in href
    screenshot(page, "airflow-ui-extra-link.png")

    # The rendered template view shows the job spec the operator built.
    page.goto(f"{task_url}/rendered_templates", wait_until="networkidle")
    page.get_by_text("uri_folder").first.wait_for(timeout=30_000)
    assert page.get_by_text("azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-20/").count() >= 1
    page.close()
