"""The Edge training page: a FastAPI app the Airflow API server mounts (see edge_training.ui.plugin).

``GET /`` renders the page (table, chart, backfill form) and ``GET /rows.json`` the same rows as JSON.
Both need a user Airflow lets read the DAG's runs (the UI's session cookie or a bearer token, checked by
Airflow's own auth manager). The backfill form posts to Airflow's own ``/api/v2/backfills`` with the
user's session, so Airflow decides; the form is only offered to users it allows to create runs of the DAG.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse

from airflow.api_fastapi.core_api.security import get_user

from edge_training.assets import configured_model_name
from edge_training.operators.gate import PRODUCTION_TAG
from edge_training.ui import sources
from edge_training.ui.chart import metric_chart
from edge_training.ui.rows import (
    Links,
    PartitionRow,
    build_rows,
    days_between,
    production_version,
    short_digest,
)

DAG_ID = "edge_training"
#: A chosen range longer than this is refused (a decade of days; the page stays one request).
MAX_DAYS = 3660
#: Without a chosen start, the page shows at most this many days back from the last one.
DEFAULT_MAX_DAYS = 366
TEMPLATES = Path(__file__).with_name("templates")


def _authorized(user: Any, method: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(
        method=method, access_entity=DagAccessEntity.RUN, details=DagDetails(id=DAG_ID), user=user
    )


def _base_path() -> str:
    """The API server's path prefix (``[api] base_url``'s path), so links work behind a proxy."""
    from airflow.configuration import conf

    path = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return path


def _date(value: str | None, name: str) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name}: expected a date YYYY-MM-DD, found {value!r}") from None


def latest_partition_day(now: dt.datetime | None = None) -> dt.date:
    """The newest day the timetable has trained or is training: yesterday (UTC), as run_offset=-1 says."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.date() - dt.timedelta(days=1)


def choose_range(start: dt.date | None, end: dt.date | None, timetable_start: dt.date | None,
                 today_latest: dt.date) -> tuple[dt.date, dt.date]:
    """The page's range: the chosen one, else the timetable's (its start date to the latest partition,
    at most DEFAULT_MAX_DAYS)."""
    last = end or today_latest
    if start is None:
        start = max(timetable_start or last, last - dt.timedelta(days=DEFAULT_MAX_DAYS - 1))
        start = min(start, last)
    if last < start:
        raise HTTPException(400, f"date range: expected start ({start}) on or before end ({last})")
    if (last - start).days + 1 > MAX_DAYS:
        raise HTTPException(400, f"date range: expected at most {MAX_DAYS} days, found {(last - start).days + 1}")
    return start, last


def collect(session: Any, start: dt.date | None, end: dt.date | None) -> dict[str, Any]:
    """Everything the page shows for the range, read from the sources now."""
    from edge_training.hooks.azureml import AzureMLHook

    conn_id = AzureMLHook.default_conn_name
    model_name = configured_model_name()
    first, last = choose_range(start, end, sources.dag_start_day(session, DAG_ID), latest_partition_day())
    days = days_between(first, last)
    timings: dict[str, float] = {}
    began = time.perf_counter()
    runs = sources.read_runs(session, DAG_ID, days)
    newest = {}
    for run in sorted(runs, key=lambda r: r.order):
        newest[run.day] = run.run_id
    states, xcoms = sources.read_task_results(session, DAG_ID, list(newest.values()))
    timings["airflow_s"] = round(time.perf_counter() - began, 3)
    began = time.perf_counter()
    registry_error = None
    try:
        models = sources.read_models(conn_id, model_name)
    except Exception as err:  # noqa: BLE001 - the runs are still worth showing; the page names the failure
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        models, registry_error = [], f"{type(err).__name__}: {first_line}"
    timings["registry_s"] = round(time.perf_counter() - began, 3)
    base = _base_path()
    links = Links(
        run_url=lambda run_id: f"{base}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}",
        model_url=lambda version: sources.model_url(conn_id, model_name, version),
    )
    rows = build_rows(days, runs, states, xcoms, models, links=links, production_tag=PRODUCTION_TAG)
    # The registry's newest version carrying the production tags, whether or not its day is displayed
    # (build_rows marks a row production by this same function).
    production = production_version(models, PRODUCTION_TAG)
    return {"dag_id": DAG_ID, "model_name": model_name, "start": first.isoformat(), "end": last.isoformat(),
            "production_version": production, "rows": rows, "timings": timings, "base": base,
            "registry_error": registry_error, "conn_id": conn_id}


def _render(data: dict[str, Any], *, can_backfill: bool) -> str:
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    environment.filters["short_digest"] = short_digest
    environment.filters["short"] = lambda value, n=12: (value or "")[:n]
    return environment.get_template("page.html").render(
        **data, chart=metric_chart(data["rows"]), can_backfill=can_backfill,
        flagged=sum(1 for r in data["rows"] if r.flag),
    )


def _session():
    from airflow.utils.session import create_session

    with create_session(scoped=False) as session:
        yield session


UserDep = Annotated[Any, Depends(get_user)]
SessionDep = Annotated[Any, Depends(_session)]
DayQuery = Annotated[str | None, Query(description="YYYY-MM-DD")]


def create_app() -> FastAPI:
    app = FastAPI(title="Edge training", description=__doc__)

    def authorized_user(user: Any) -> Any:
        if not _authorized(user, "GET"):
            raise HTTPException(403, f"Forbidden: reading the runs of DAG {DAG_ID!r} is not allowed for this user")
        return user

    @app.get("/", response_class=HTMLResponse)
    def page(user: UserDep, session: SessionDep, start: DayQuery = None, end: DayQuery = None):
        authorized_user(user)
        data = collect(session, _date(start, "start"), _date(end, "end"))
        return HTMLResponse(_render(data, can_backfill=_authorized(user, "POST")))

    @app.get("/rows.json")
    def rows_json(user: UserDep, session: SessionDep, start: DayQuery = None, end: DayQuery = None):
        authorized_user(user)
        data = collect(session, _date(start, "start"), _date(end, "end"))
        rows: list[PartitionRow] = data.pop("rows")
        data["rows"] = [{**asdict(r), "flag": r.flag} for r in rows]
        data["can_backfill"] = _authorized(user, "POST")
        return JSONResponse(data)

    return app


app = create_app()
