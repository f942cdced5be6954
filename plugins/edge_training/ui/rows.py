"""One row per partition day for the Edge training page, from what Airflow and the AML registry hold.

Pure functions over plain records (the page's sources read them: :mod:`edge_training.ui.sources`), so
what a row says can be tested without a database or a workspace. A day's row describes the newest DAG
run that trained it; a day with no run at all is a row too ("no run"), because which days are missing
is what a person scanning a backfill wants to see.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_training.operators.stackhub_blob import VALIDATION_FINDING_KEY

#: The tasks whose results a row reads, by what they tell.
VALIDATE, SUBMIT, GATE, REGISTER, PUSH = (
    "validate_partition", "submit_training", "evaluate_gate", "register_model", "push_image",
)
RESULT_KEY = "return_value"


@dataclass(frozen=True)
class RunRecord:
    """A DAG run as the metadata database holds it; ``day`` is the partition it trains (YYYY-MM-DD)."""

    run_id: str
    day: str
    state: str | None
    run_type: str | None
    #: Orders a day's runs: the newest is the one the row describes.
    order: tuple = ()


@dataclass(frozen=True)
class ModelRecord:
    """A model version as the AML registry holds it (newest first when listed)."""

    version: str
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass
class PartitionRow:
    day: str
    runs: int = 0
    run_id: str | None = None
    run_state: str | None = None
    run_type: str | None = None
    run_url: str | None = None
    job_name: str | None = None
    job_status: str | None = None
    job_duration_s: float | None = None
    job_url: str | None = None
    gate_passed: bool | None = None
    gate_reason: str | None = None
    metric_name: str | None = None
    metric_value: float | None = None
    model_version: str | None = None
    model_url: str | None = None
    production: bool = False
    fingerprint: str | None = None
    image: str | None = None
    digest: str | None = None
    #: What validation found wrong with the day: "no data", "incomplete", "schema drift", ...
    finding: str | None = None
    finding_message: str | None = None

    @property
    def flag(self) -> str | None:
        """The day's warning, if any: a refused partition, or no run at all."""
        if self.finding:
            return self.finding
        return "no run" if self.runs == 0 else None


@dataclass(frozen=True)
class Links:
    """How the page links out: to a run in Airflow's grid and to a model version in AML studio."""

    run_url: Callable[[str], str]
    model_url: Callable[[str], str]


def days_between(first: dt.date, last: dt.date) -> list[str]:
    """Every day from ``last`` back to ``first``, newest first, as YYYY-MM-DD."""
    if last < first:
        raise ValueError(f"date range: expected the first day ({first}) on or before the last ({last})")
    return [(last - dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def production_version(models: Sequence[ModelRecord], production_tag: Mapping[str, str]) -> str | None:
    """The newest version carrying every production tag, as the gate's ``production_tag`` policy picks it."""
    for model in models:
        if all(str(model.tags.get(k)) == str(v) for k, v in production_tag.items()):
            return model.version
    return None


def short_digest(digest: str | None, length: int = 12) -> str | None:
    """``sha256:0123456789ab`` from a full digest (or an image reference ending in one)."""
    if not digest:
        return None
    digest = digest.rsplit("@", 1)[-1]
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:length]}" if value else digest[:length]


def build_rows(
    days: Sequence[str],
    runs: Iterable[RunRecord],
    task_states: Mapping[tuple[str, str], str | None],
    xcoms: Mapping[tuple[str, str, str], Any],
    models: Sequence[ModelRecord],
    *,
    links: Links,
    production_tag: Mapping[str, str],
) -> list[PartitionRow]:
    """The page's rows for ``days`` (in the order given): each from its newest run, else from nothing."""
    by_day: dict[str, list[RunRecord]] = {}
    for run in runs:
        by_day.setdefault(run.day, []).append(run)
    production = production_version(models, production_tag)
    # A model version the registry knows for a day, when the run's own result does not say (older runs,
    # a run still going): the newest version tagged with that partition.
    registry_by_day: dict[str, ModelRecord] = {}
    for model in models:
        registry_by_day.setdefault(str(model.tags.get("partition", "")), model)

    rows = []
    for day in days:
        row = PartitionRow(day=day)
        day_runs = sorted(by_day.get(day, []), key=lambda r: r.order)
        row.runs = len(day_runs)
        if day_runs:
            _fill_from_run(row, day_runs[-1], task_states, xcoms, links)
        if row.model_version is None and day in registry_by_day:
            model = registry_by_day[day]
            row.model_version = model.version
            row.fingerprint = row.fingerprint or model.tags.get("data_fingerprint")
            row.image = row.image or model.tags.get("image")
        if row.model_version is not None:
            row.model_url = links.model_url(row.model_version)
            row.production = row.model_version == production
        if row.image and not row.digest and "@" in row.image:
            row.digest = row.image.rsplit("@", 1)[1]
        rows.append(row)
    return rows


def _fill_from_run(row: PartitionRow, run: RunRecord, task_states: Mapping[tuple[str, str], str | None],
                   xcoms: Mapping[tuple[str, str, str], Any], links: Links) -> None:
    def result(task_id: str, key: str = RESULT_KEY) -> dict:
        value = xcoms.get((run.run_id, task_id, key))
        return value if isinstance(value, dict) else {}

    row.run_id, row.run_state, row.run_type = run.run_id, run.state, run.run_type
    row.run_url = links.run_url(run.run_id)

    partition = result(VALIDATE)
    row.fingerprint = partition.get("fingerprint")
    finding = result(VALIDATE, VALIDATION_FINDING_KEY)
    if finding:
        row.finding, row.finding_message = finding.get("finding"), finding.get("message")
    elif task_states.get((run.run_id, VALIDATE)) == "failed":
        row.finding = "validation failed"

    job = result(SUBMIT)
    row.job_name = job.get("job_name")
    row.job_status = job.get("status")
    row.job_duration_s = job.get("duration_s")
    row.job_url = job.get("studio_url")
    if not job and task_states.get((run.run_id, SUBMIT)) in ("deferred", "running", "queued", "scheduled"):
        row.job_status = "running"

    gate = result(GATE)
    if gate:
        row.gate_passed = gate.get("passed")
        row.gate_reason = gate.get("reason")
        row.metric_name = gate.get("metric")
        row.metric_value = gate.get("new_value")

    model = result(REGISTER)
    row.model_version = str(model["version"]) if model.get("version") is not None else None

    image = result(PUSH)
    row.image = image.get("image")
    row.digest = image.get("digest")
