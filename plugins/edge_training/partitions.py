"""The one place that maps a run's partition key to the Stack Hub storage layout (``date=YYYY-MM-DD``).

``CronPartitionTimetable`` keys look like ``2026-11-10T02:00:00``; the data lives under
``telemetry/date=2026-11-10/``. Every caller (the DAG, the partition operator, the job operator)
goes through :func:`partition_date` and :func:`partition_prefix`, so the mapping and its validation
cannot drift apart. Validation is strict on purpose: a key or prefix is spliced into blob names and
into the ``azureml://`` URI the training job reads, so anything that could escape the prefix
(``..``, absolute paths, percent-encoded tricks, backslashes, control characters) is refused.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from edge_training.exceptions import InvalidPartitionKeyError

__all__ = [
    "DATE_PLACEHOLDERS",
    "date_in_prefix",
    "partition_date",
    "partition_date_str",
    "partition_prefix",
    "validate_prefix",
]

#: Placeholders a prefix template may contain; each is replaced by the ISO date (``2026-11-10``).
DATE_PLACEHOLDERS = ("{partition_date}", "{date}")

# A partition key: a date, optionally with a time of day and a UTC offset (what Airflow's
# CronPartitionTimetable and `airflow backfill` produce). Nothing else is accepted.
_KEY_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
# Characters allowed in a blob prefix built from a template: letters, digits and . _ - = /
_PREFIX_CHARS_RE = re.compile(r"^[A-Za-z0-9._=\-/]+$")


def _describe(value: object) -> str:
    """repr() keeps control characters visible in error messages."""
    return repr(value)


def _reject_dangerous(value: str, *, what: str) -> None:
    """Refuse the shapes that could escape a prefix, with a reason that names the problem."""
    if not value or not value.strip():
        raise InvalidPartitionKeyError(f"{what} is empty: expected a non-empty value, found {_describe(value)}")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise InvalidPartitionKeyError(
                f"{what} {_describe(value)} contains a control character (U+{ord(ch):04X}): "
                "expected printable characters only"
            )
    if "\\" in value:
        raise InvalidPartitionKeyError(
            f"{what} {_describe(value)} contains a backslash: expected '/'-separated blob path segments"
        )
    if "%" in value:
        raise InvalidPartitionKeyError(
            f"{what} {_describe(value)} contains percent-encoding ('%'), which could hide '..' or '/' "
            "(e.g. %2e%2e, %2f): expected a plain, unencoded value"
        )
    normalised = unicodedata.normalize("NFKC", value)
    if normalised != value:
        raise InvalidPartitionKeyError(
            f"{what} {_describe(value)} contains Unicode compatibility characters (normalises to "
            f"{_describe(normalised)}): expected plain ASCII"
        )
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value) or "://" in value:
        raise InvalidPartitionKeyError(
            f"{what} {_describe(value)} is an absolute path or URL: expected a path relative to the container"
        )
    segments = value.split("/")
    if any(seg in ("..", ".") for seg in segments) or ".." in value:
        raise InvalidPartitionKeyError(
            f"{what} {_describe(value)} contains a '..' or '.' path segment: expected no traversal"
        )


def partition_date(key: str | dt.date | dt.datetime) -> dt.date:
    """Return the calendar date a partition key stands for.

    Accepts a ``CronPartitionTimetable`` key (``2026-11-10T02:00:00``, optionally with an offset or
    ``Z``), a bare ``2026-11-10``, or a ``date``/``datetime``. The date is taken as written (the
    timetable formats its key in its own timezone), never converted to another zone.
    """
    if key is None:
        raise InvalidPartitionKeyError(
            "no partition key: expected the run's partition_key (CronPartitionTimetable) or an explicit date"
        )
    if isinstance(key, dt.datetime):
        return key.date()
    if isinstance(key, dt.date):
        return key
    if not isinstance(key, str):
        raise InvalidPartitionKeyError(
            f"partition key {_describe(key)} has type {type(key).__name__}: expected str, date or datetime"
        )
    _reject_dangerous(key, what="partition key")
    if "/" in key:
        raise InvalidPartitionKeyError(
            f"partition key {_describe(key)} contains '/': expected a date such as 2026-11-10 or 2026-11-10T02:00:00"
        )
    match = _KEY_RE.match(key)
    if not match:
        raise InvalidPartitionKeyError(
            f"partition key {_describe(key)} is not a date: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"
        )
    try:
        return dt.date.fromisoformat(match.group("date"))
    except ValueError as err:
        raise InvalidPartitionKeyError(f"partition key {_describe(key)} is not a valid calendar date: {err}") from None


def partition_date_str(key: str | dt.date | dt.datetime) -> str:
    """``partition_date`` as ``YYYY-MM-DD`` (for templates: ``{{ edge_partition(partition_key) }}``)."""
    return partition_date(key).isoformat()


_DATE_SEGMENT_RE = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")


def date_in_prefix(prefix: str) -> dt.date | None:
    """The date of a rendered ``.../date=YYYY-MM-DD/`` prefix, or None when it has no such segment."""
    match = _DATE_SEGMENT_RE.search(prefix)
    return partition_date(match.group(1)) if match else None


def validate_prefix(prefix: str) -> str:
    """Check a blob prefix is a safe, relative folder path and return it with exactly one trailing '/'."""
    if not isinstance(prefix, str):
        raise InvalidPartitionKeyError(f"partition prefix {_describe(prefix)} is not a string")
    _reject_dangerous(prefix, what="partition prefix")
    if not _PREFIX_CHARS_RE.match(prefix):
        bad = sorted({ch for ch in prefix if not re.match(r"[A-Za-z0-9._=\-/]", ch)})
        raise InvalidPartitionKeyError(
            f"partition prefix {_describe(prefix)} contains {bad!r}: expected only letters, digits and . _ - = /"
        )
    body = prefix.rstrip("/")  # non-empty: a leading '/' was refused above
    if "//" in body:
        raise InvalidPartitionKeyError(f"partition prefix {_describe(prefix)} has an empty path segment ('//')")
    return body + "/"


def partition_prefix(template_or_prefix: str, key: str | dt.date | dt.datetime | None = None) -> str:
    """Build the blob prefix of a partition, e.g. ``telemetry/date=2026-11-10/``.

    ``template_or_prefix`` is one of:

    - a template with ``{date}`` or ``{partition_date}``: ``telemetry/date={date}/``;
    - a base folder without a placeholder: ``telemetry/`` (``date=YYYY-MM-DD/`` is appended);
    - with ``key=None``, an already-rendered prefix, which is only validated.
    """
    if not isinstance(template_or_prefix, str):
        raise InvalidPartitionKeyError(f"partition prefix template {_describe(template_or_prefix)} is not a string")
    has_placeholder = any(p in template_or_prefix for p in DATE_PLACEHOLDERS)
    if key is None:
        if has_placeholder:
            raise InvalidPartitionKeyError(
                f"partition prefix template {template_or_prefix!r} has a date placeholder but no partition key was given"
            )
        return validate_prefix(template_or_prefix)
    iso = partition_date(key).isoformat()
    if has_placeholder:
        rendered = template_or_prefix
        for placeholder in DATE_PLACEHOLDERS:
            rendered = rendered.replace(placeholder, iso)
    else:
        base = template_or_prefix.rstrip("/")
        rendered = f"{base}/date={iso}/" if base else f"date={iso}/"
    if "{" in rendered or "}" in rendered:
        raise InvalidPartitionKeyError(
            f"partition prefix template {template_or_prefix!r} has an unknown placeholder: "
            f"expected only {', '.join(DATE_PLACEHOLDERS)}"
        )
    return validate_prefix(rendered)
