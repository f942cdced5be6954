"""A person's view: headless Chromium logs into the Airflow UI and reads a training run.

Debian's chromium (installed by the fixture if missing) driven by Playwright with executable_path:
nothing is downloaded. Screenshots go to .devstack/screenshots (and to docs/ with
EDGE_UPDATE_SCREENSHOTS=1, which is how docs/airflow-ui-*.png were made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devstack.util import apt_install
from tests.e2e.support import DAG_ID, run_to_completion

PARTITION = "2026-11-20"
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if shutil.which("chromium") is None:
        apt_install(["chromium"], what="UI test (headless chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def _screenshot(page, name: str) -> None:
    out = REPO / ".devstack" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / name))
    if os.environ.get("EDGE_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(out / name, REPO / "docs" / name)


def test_ui_shows_the_aml_job_link_and_the_jobs_log(airflow, browser):
    run_id, run, tis = run_to_completion(airflow, PARTITION)
    assert run["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    job_name = airflow.xcom(DAG_ID, run_id, "submit_training")["job_name"]

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"{airflow.base_url}/", wait_until="networkidle")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", airflow.admin_password)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)

    # The task's log tab shows the AML job's own log lines.
    task_url = f"{airflow.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/submit_training"
    page.goto(task_url, wait_until="networkidle")
    page.get_by_text(f"[{job_name}]").first.wait_for(timeout=30_000)
    assert page.get_by_text("train.py").count() >= 1
    _screenshot(page, "airflow-ui-training-log.png")

    # The details tab carries the extra link to the job in AML studio.
    page.goto(f"{task_url}/details", wait_until="networkidle")
    link = page.get_by_role("link", name="Azure ML job")
    link.wait_for(timeout=30_000)
    href = link.get_attribute("href")
    assert href and job_name in href and "/studio/jobs/" in href
    _screenshot(page, "airflow-ui-extra-link.png")

    # The rendered template view shows the job spec the operator built.
    page.goto(f"{task_url}/rendered_templates", wait_until="networkidle")
    page.get_by_text("uri_folder").first.wait_for(timeout=30_000)
    assert page.get_by_text("azureml://datastores/stackhub_data/paths/telemetry/date=2026-11-20/").count() >= 1
    page.close()
