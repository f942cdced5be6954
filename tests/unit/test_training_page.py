"""The Edge training page without a stack: its rows, its chart, its range, its plugin and its permissions.

The rows are built from the records Airflow and the registry hold (edge_training.ui.rows); the app is
driven through FastAPI's test client with Airflow's user dependency answered by a chosen user and the
sources read from an in-memory record set. The page against the real database, API server and registry is
tested in a browser on the stack (tests/e2e/test_training_page_in_browser.py).
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

from edge_training.ui.chart import metric_chart
from edge_training.ui.rows import (
    Links,
    ModelRecord,
    PartitionRow,
    RunRecord,
    build_rows,
    days_between,
    production_version,
    short_digest,
)

LINKS = Links(run_url=lambda run_id: f"/dags/edge_training/runs/{run_id}",
              model_url=lambda version: f"https://studio/model/m:{version}")
PRODUCTION = {"stage": "production"}
DIGEST = "sha256:" + "ab" * 32


def run(run_id: str, day: str, state: str = "success", order: int = 0) -> RunRecord:
    return RunRecord(run_id=run_id, day=day, state=state, run_type="backfill", order=(order,))


def trained(run_id: str, *, version: str, metric: float, passed: bool = True) -> dict:
    return {
        (run_id, "validate_partition", "return_value"): {"fingerprint": "f" * 64},
        (run_id, "submit_training", "return_value"): {"job_name": f"job-{run_id}", "status": "Completed",
                                                      "duration_s": 5.25, "studio_url": f"https://studio/{run_id}"},
        (run_id, "evaluate_gate", "return_value"): {"passed": passed, "reason": "better", "metric": "f1",
                                                    "new_value": metric},
        (run_id, "register_model", "return_value"): {"name": "m", "version": version},
        (run_id, "push_image", "return_value"): {"image": f"acr/m@{DIGEST}", "digest": DIGEST},
    }


def test_each_day_is_described_by_its_newest_run_and_missing_days_are_rows_too():
    runs = [run("old", "2026-11-02", "failed", order=1), run("new", "2026-11-02", order=2), run("r1", "2026-11-01")]
    xcoms = {**trained("new", version="7", metric=0.9), **trained("r1", version="6", metric=0.8)}
    models = [ModelRecord("7", {"partition": "2026-11-02"}),
              ModelRecord("6", {"partition": "2026-11-01", **PRODUCTION})]
    rows = build_rows(days_between(dt.date(2026, 11, 1), dt.date(2026, 11, 3)), runs, {}, xcoms, models,
                      links=LINKS, production_tag=PRODUCTION)

    assert [r.day for r in rows] == ["2026-11-03", "2026-11-02", "2026-11-01"]
    missing, newest, first = rows
    assert (missing.runs, missing.flag, missing.run_id) == (0, "no run", None)
    assert (newest.runs, newest.run_id, newest.run_state, newest.run_url) == (
        2, "new", "success", "/dags/edge_training/runs/new")
    assert (newest.job_name, newest.job_status, newest.job_duration_s, newest.job_url) == (
        "job-new", "Completed", 5.25, "https://studio/new")
    assert (newest.gate_passed, newest.metric_name, newest.metric_value) == (True, "f1", 0.9)
    assert (newest.model_version, newest.model_url, newest.production) == ("7", "https://studio/model/m:7", False)
    assert (newest.image, newest.digest, newest.fingerprint, newest.flag) == (f"acr/m@{DIGEST}", DIGEST, "f" * 64, None)
    assert (first.model_version, first.production) == ("6", True)


def test_refused_partitions_are_flagged_with_their_finding():
    runs = [run("a", "2026-11-05", "failed"), run("b", "2026-11-04", "failed"), run("c", "2026-11-03", "failed")]
    xcoms = {("a", "validate_partition", "validation_finding"): {"finding": "no data", "message": "nothing there"},
             ("b", "validate_partition", "validation_finding"): {"finding": "incomplete", "message": "no marker"}}
    states = {("c", "validate_partition"): "failed"}
    rows = build_rows(["2026-11-05", "2026-11-04", "2026-11-03"], runs, states, xcoms, [], links=LINKS,
                      production_tag=PRODUCTION)
    assert [(r.flag, r.finding_message) for r in rows] == [
        ("no data", "nothing there"), ("incomplete", "no marker"), ("validation failed", None)]


def test_a_deferred_training_shows_as_running_and_the_registry_fills_an_older_days_model():
    runs = [run("live", "2026-11-02", "running")]
    states = {("live", "submit_training"): "deferred"}
    models = [ModelRecord("3", {"partition": "2026-11-01", "data_fingerprint": "e" * 64, "image": f"acr/m@{DIGEST}"})]
    rows = build_rows(["2026-11-02", "2026-11-01"], runs, states, {}, models, links=LINKS, production_tag=PRODUCTION)
    assert rows[0].job_status == "running" and rows[0].model_version is None
    assert (rows[1].model_version, rows[1].fingerprint, rows[1].digest) == ("3", "e" * 64, DIGEST)


def test_production_is_the_newest_version_with_every_production_tag():
    models = [ModelRecord("9", {"stage": "staging"}), ModelRecord("8", {"stage": "production"}),
              ModelRecord("2", {"stage": "production"})]
    assert production_version(models, PRODUCTION) == "8"
    assert production_version(models, {"stage": "production", "team": "x"}) is None


def test_days_between_is_newest_first_and_refuses_a_reversed_range():
    assert days_between(dt.date(2026, 2, 27), dt.date(2026, 3, 1)) == ["2026-03-01", "2026-02-28", "2026-02-27"]
    with pytest.raises(ValueError, match=r"expected the first day \(2026-03-02\) on or before the last"):
        days_between(dt.date(2026, 3, 2), dt.date(2026, 3, 1))


def test_short_digest():
    assert short_digest(DIGEST) == "sha256:abababababab"
    assert short_digest(f"host/repo@{DIGEST}") == "sha256:abababababab"
    assert short_digest(None) is None


def test_the_chart_draws_each_metric_leaves_gaps_for_days_without_one_and_rings_production():
    rows = [PartitionRow(day="2026-11-04", metric_value=0.9, metric_name="f1", model_version="4", production=True),
            PartitionRow(day="2026-11-03"),
            PartitionRow(day="2026-11-02", metric_value=0.7, metric_name="f1", model_version="2"),
            PartitionRow(day="2026-11-01", metric_value=0.6, metric_name="f1", gate_passed=False)]
    svg = ET.fromstring(metric_chart(rows))
    ns = {"s": "http://www.w3.org/2000/svg"}
    points = svg.findall("s:circle[@class='point']", ns) + svg.findall("s:circle[@class='point failed-gate']", ns)
    assert sorted(p.get("data-day") for p in points) == ["2026-11-01", "2026-11-02", "2026-11-04"]
    # 11-01 and 11-02 are consecutive: one line; 11-03 has no metric, so 11-04 stands alone (no line).
    lines = svg.findall("s:polyline", ns)
    assert len(lines) == 1 and len(lines[0].get("points").split()) == 2
    rings = svg.findall("s:circle[@class='production']", ns)
    assert [r.get("data-day") for r in rings] == ["2026-11-04"]
    assert any((t.text or "") == "production v4" for t in svg.findall("s:text", ns))
    # Higher metric is drawn higher (smaller y).
    by_day = {p.get("data-day"): float(p.get("cy")) for p in points}
    assert by_day["2026-11-04"] < by_day["2026-11-02"] < by_day["2026-11-01"]


def test_the_chart_says_so_when_no_day_has_a_metric():
    assert "No day in this range has a primary metric" in metric_chart([PartitionRow(day="2026-11-01")])


def test_the_range_defaults_to_the_timetable_and_refuses_bad_ones():
    from fastapi import HTTPException

    from edge_training.ui.app import DEFAULT_MAX_DAYS, MAX_DAYS, choose_range

    latest = dt.date(2026, 12, 2)
    assert choose_range(None, None, dt.date(2026, 11, 1), latest) == (dt.date(2026, 11, 1), latest)
    assert choose_range(None, None, dt.date(2020, 1, 1), latest) == (
        latest - dt.timedelta(days=DEFAULT_MAX_DAYS - 1), latest)
    assert choose_range(dt.date(2026, 1, 1), dt.date(2026, 1, 31), None, latest) == (
        dt.date(2026, 1, 1), dt.date(2026, 1, 31))
    with pytest.raises(HTTPException, match="expected start"):
        choose_range(dt.date(2026, 2, 1), dt.date(2026, 1, 31), None, latest)
    with pytest.raises(HTTPException, match=f"expected at most {MAX_DAYS} days"):
        choose_range(dt.date(2000, 1, 1), dt.date(2026, 1, 31), None, latest)


# --- the app, as the API server mounts it -------------------------------------------------------
@pytest.fixture
def page_client(monkeypatch):
    """The page's app with Airflow's user dependency and auth manager answered by the test, and sources
    that hold two trained days, one refused day and one missing day."""
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from edge_training.ui import app as page

    runs = [run("r2", "2026-11-03"), run("r1", "2026-11-02"), run("bad", "2026-11-01", "failed")]
    xcoms = {**trained("r2", version="2", metric=0.91), **trained("r1", version="1", metric=0.85),
             ("bad", "validate_partition", "validation_finding"): {"finding": "no data", "message": "none <b>"}}
    models = [ModelRecord("2", {"partition": "2026-11-03"}),
              ModelRecord("1", {"partition": "2026-11-02", **PRODUCTION})]
    monkeypatch.setattr(page.sources, "dag_start_day", lambda session, dag_id: dt.date(2026, 10, 31))
    monkeypatch.setattr(page.sources, "read_runs", lambda session, dag_id, days: [r for r in runs if r.day in days])
    monkeypatch.setattr(page.sources, "read_task_results", lambda session, dag_id, ids: ({}, xcoms))
    monkeypatch.setattr(page.sources, "read_models", lambda conn_id, name: models)
    monkeypatch.setattr(page.sources, "model_url", lambda conn_id, name, version: f"https://studio/{name}:{version}")
    monkeypatch.setattr(page, "latest_partition_day", lambda now=None: dt.date(2026, 11, 3))
    monkeypatch.setattr(page, "_base_path", lambda: "/base")
    allowed: dict[str, bool] = {}
    monkeypatch.setattr(page, "_authorized", lambda user, method: allowed.get(method, False))
    page.app.dependency_overrides[get_user] = lambda: SimpleNamespace(name="someone")
    page.app.dependency_overrides[page._session] = lambda: None
    try:
        yield TestClient(page.app), allowed
    finally:
        page.app.dependency_overrides.clear()


def test_the_page_needs_a_user_airflow_lets_read_the_runs(page_client):
    client, allowed = page_client
    response = client.get("/")
    assert response.status_code == 403
    assert "reading the runs of DAG 'edge_training' is not allowed" in response.json()["detail"]


def test_the_page_shows_the_rows_the_chart_and_the_form_only_to_users_allowed_to_backfill(page_client):
    client, allowed = page_client
    allowed["GET"] = True
    html = client.get("/").text
    days = re.findall(r'<tr data-day="([0-9-]+)"', html)
    assert days == ["2026-11-03", "2026-11-02", "2026-11-01", "2026-10-31"]
    assert 'id="production-version" class="prod">1<' in html
    assert 'href="/base/dags/edge_training/runs/r2"' in html and 'href="https://studio/equipment-failure:2"' in html
    assert 'data-flag="no data"' in html and 'data-flag="no run"' in html
    assert "none &lt;b&gt;" in html and "none <b>" not in html  # escaped
    assert "<svg" in html and "production v1" in html
    assert 'id="backfill-not-allowed"' in html and 'id="backfill-form"' not in html

    allowed["POST"] = True
    html = client.get("/").text
    assert 'id="backfill-form"' in html and '"/base/api/v2/backfills"' in html


def test_rows_json_holds_what_the_table_shows(page_client):
    client, allowed = page_client
    allowed["GET"] = True
    data = client.get("/rows.json", params={"start": "2026-11-02", "end": "2026-11-03"}).json()
    assert (data["start"], data["end"], data["production_version"], data["can_backfill"]) == (
        "2026-11-02", "2026-11-03", "1", False)
    assert [(r["day"], r["model_version"], r["digest"], r["production"]) for r in data["rows"]] == [
        ("2026-11-03", "2", DIGEST, False), ("2026-11-02", "1", DIGEST, True)]


def test_a_bad_date_is_named(page_client):
    client, allowed = page_client
    allowed["GET"] = True
    response = client.get("/rows.json", params={"start": "11/02/2026"})
    assert response.status_code == 400
    assert response.json()["detail"] == "start: expected a date YYYY-MM-DD, found '11/02/2026'"


def test_the_plugin_mounts_the_app_and_adds_a_navigation_entry():
    from edge_training.ui.app import app
    from edge_training.ui.plugin import EdgeTrainingUIPlugin

    plugin = EdgeTrainingUIPlugin()
    assert plugin.fastapi_apps == [{"app": app, "url_prefix": "/edge-training", "name": "Edge training"}]
    [view] = plugin.external_views
    assert (view["href"], view["url_route"], view["destination"]) == ("/edge-training/", "edge-training", "nav")


def test_airflow_loads_only_the_plugin_file_from_the_plugins_folder():
    """Airflow imports every .py file of its plugins folder as a top-level module named after the file; the
    package's modules (hooks/azureml.py would become `azureml`) are kept out by plugins/.airflowignore."""
    from pathlib import Path

    from airflow._shared.module_loading import find_path_from_directory

    plugins = Path(__file__).resolve().parents[2] / "plugins"
    found = [Path(f).relative_to(plugins).as_posix()
             for f in find_path_from_directory(str(plugins), ".airflowignore", "glob") if f.endswith(".py")]
    assert found == ["edge_training_ui.py"]


def test_a_registry_that_cannot_be_read_is_named_and_the_runs_still_shown(page_client, monkeypatch):
    from edge_training.ui import app as page

    client, allowed = page_client
    allowed["GET"] = True

    def refused(conn_id, name):
        raise PermissionError("token refused\nmore detail")

    monkeypatch.setattr(page.sources, "read_models", refused)
    html = client.get("/").text
    assert 'id="registry-error"' in html and "PermissionError: token refused" in html and "more detail" not in html
    assert "<code>azureml_default</code>" in html
    assert 'data-run-state="success"' in html


def test_the_production_version_is_named_even_when_its_day_is_outside_the_range(page_client, monkeypatch):
    """Production is the registry's newest version with the production tags, not the newest production row:
    version 1 (trained on 2026-11-02) is production while only 2026-11-03 is shown."""
    from edge_training.ui import app as page

    client, allowed = page_client
    allowed["GET"] = True
    data = client.get("/rows.json", params={"start": "2026-11-03", "end": "2026-11-03"}).json()
    assert [(r["day"], r["model_version"], r["production"]) for r in data["rows"]] == [("2026-11-03", "2", False)]
    assert data["production_version"] == "1"
    html = client.get("/", params={"start": "2026-11-03", "end": "2026-11-03"}).text
    assert 'id="production-version" class="prod">1<' in html and 'data-production="true"' not in html

    # A production version no partition names (registered by hand) is still the one named.
    monkeypatch.setattr(page.sources, "read_models", lambda conn_id, name: [
        ModelRecord("5", {"partition": "2026-11-03"}), ModelRecord("4", dict(PRODUCTION))])
    assert client.get("/rows.json").json()["production_version"] == "4"
    # None carrying the production tags: none named, no row marked.
    monkeypatch.setattr(page.sources, "read_models", lambda conn_id, name: [
        ModelRecord("2", {"partition": "2026-11-03", "stage": "staging"})])
    data = client.get("/rows.json").json()
    assert data["production_version"] is None and not any(r["production"] for r in data["rows"])
    assert 'id="production-version" class="prod">none<' in client.get("/").text


class _References(HTMLParser):
    """Every attribute of every element, and the text of <script> and <style> elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, str, str]] = []
        self.code: list[str] = []
        self._in_code = False

    def handle_starttag(self, tag, attrs):
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        self._in_code = tag in ("script", "style")

    def handle_startendtag(self, tag, attrs):
        self.attributes += [(tag, name, value or "") for name, value in attrs]

    def handle_endtag(self, tag):
        self._in_code = False

    def handle_data(self, data):
        if self._in_code:
            self.code.append(data)


#: An absolute or protocol-relative URL: a scheme (http:, https:, ...) followed by //, or a bare //.
EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


@pytest.mark.parametrize("can_backfill", [False, True], ids=["read-only", "with-backfill-form"])
def test_the_page_loads_nothing_from_another_origin_and_links_out_only_to_the_rows_studio_links(
        page_client, can_backfill):
    """The page works offline (no CDN, no external script, style, font or image): every src, href, action,
    style url() and script URL is relative to the page. The only absolute URLs are the anchors the rows
    carry to AML studio (a job, a model version), which the user follows; the SVG's xmlns is a name."""
    client, allowed = page_client
    allowed["GET"], allowed["POST"] = True, can_backfill
    html = client.get("/").text
    rows = client.get("/rows.json").json()["rows"]
    studio = {r[k] for r in rows for k in ("job_url", "model_url") if r[k]}
    assert studio, "the fixture's rows should carry studio links, or this test checks nothing"
    assert ("<script" in html) == can_backfill

    parser = _References()
    parser.feed(html)
    parser.close()
    external = [(tag, name, value) for tag, name, value in parser.attributes
                if EXTERNAL.match(value) or re.search(r"url\(\s*['\"]?\s*(?:[a-z][a-z0-9+.-]*:)?//", value, re.I)]
    assert external, "the studio anchors should be found, or the parser finds nothing"
    unexpected = [(tag, name, value) for tag, name, value in external
                  if not (tag == "a" and name == "href" and value in studio)
                  and not (name == "xmlns" and value == "http://www.w3.org/2000/svg")]
    assert unexpected == [], f"the page references another origin: {unexpected}"
    code = "\n".join(parser.code)
    assert "<style" in html and code.strip()
    in_code = re.findall(r"""(?:[a-z][a-z0-9+.-]*:)?//[^\s'"`)]*""", code, re.I)
    # A `//` in code is a URL unless it is a JS comment (after whitespace at a line's start).
    in_code = [m for m in in_code if not re.search(rf"(?m)^\s*{re.escape(m)}", code)]
    assert in_code == [], f"a <script> or <style> of the page references another origin: {in_code}"
    # And nothing outside the allowed anchors and the SVG namespace names an http(s) URL anywhere in the text.
    rest = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for url in studio:
        rest = rest.replace(f'href="{url}"', "")
    assert re.findall(r"https?://\S*", rest, re.I) == []
