"""Training windows: the days a run trains on, and what identifies them.

A run keyed at day D with ``window_days`` N trains on the N partitions D-N+1 .. D. Each day is validated
as a partition of its own (:meth:`StackHubBlobHook.validate_partition`); a day that has no data or is
incomplete is a gap, accepted only while at least ``min_days`` days are usable. Any other refusal (schema
drift, locality, credentials) fails the window: those are not gaps to train around.

The window's fingerprint covers the days used, each by its own partition fingerprint, so the AML job name
(made from it), the model's tags and the image's labels identify exactly the data trained on. A window of
one day keeps that day's partition fingerprint, its job input name and its job, so daily trainings are
unchanged by windows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from edge_training.exceptions import InvalidInputError, WindowIncompleteError

WINDOW_FINGERPRINT_VERSION = "edge-training-window/v1"
#: The longest window a run may ask for (the DAG's param has the same maximum).
MAX_WINDOW_DAYS = 31
#: The job input of the run's own day; earlier days are ``data_YYYY_MM_DD``.
OWN_DAY_INPUT = "data"


def window_bounds(window_days: Any, min_days: Any) -> tuple[int, int]:
    """``(window_days, min_days)`` as checked ints; ``min_days`` None or empty means every day."""
    def whole(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            raise InvalidInputError(f"{name} {value!r}: expected a whole number of days, found {type(value).__name__}")
        return int(value)

    days = whole("window_days", window_days)
    if not 1 <= days <= MAX_WINDOW_DAYS:
        raise InvalidInputError(f"window_days {days}: expected 1 to {MAX_WINDOW_DAYS} days")
    least = days if min_days in (None, "") else whole("min_days", min_days)
    if not 1 <= least <= days:
        raise InvalidInputError(f"min_days {least}: expected 1 to window_days ({days})")
    return days, least


def window_dates(end: dt.date, window_days: int) -> list[dt.date]:
    """The window's days, oldest first, ending with ``end`` (the run's own partition day)."""
    return [end - dt.timedelta(days=back) for back in range(window_days - 1, -1, -1)]


def input_name(day: str, own_day: str) -> str:
    """The AML job input that reads ``day``: ``data`` for the run's own day, else ``data_YYYY_MM_DD``."""
    return OWN_DAY_INPUT if day == own_day else "data_" + day.replace("-", "_")


def window_fingerprint(partitions: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 over the (day, partition fingerprint) of each day used, oldest first; one day: its own."""
    if len(partitions) == 1:
        return str(partitions[0]["fingerprint"])
    digest = hashlib.sha256(WINDOW_FINGERPRINT_VERSION.encode() + b"\n")
    for part in partitions:
        digest.update(f"{part['partition_date']} {part['fingerprint']}\n".encode())
    return digest.hexdigest()


def data_args(job_inputs: Mapping[str, Any], option: str = "--data") -> str:
    """`` --data ${{inputs.<name>}}`` for each job input, in order: the training command's data folders."""
    return "".join(f" {option} ${{{{inputs.{name}}}}}" for name in job_inputs)


def combine_window(partitions: Sequence[Mapping[str, Any]], gaps: Sequence[Mapping[str, str]], *,
                   own_day: str | None, window_days: int, min_days: int) -> dict[str, Any]:
    """One summary for the window from its days' summaries (oldest first) and its gaps.

    The result has the keys of a day's summary (``prefix``, ``data_uri`` and ``manifest`` are the newest
    day's; counts are summed; ``fingerprint`` is the window's) plus ``window_days``, ``min_days``,
    ``data_days`` (the days used, comma-separated), ``missing_days`` (the gaps, comma-separated),
    ``gaps`` (each with its finding), ``partitions`` (each day's summary) and ``job_inputs``.
    """
    if len(partitions) < min_days:
        named = "; ".join(f"{g['date']}: {g['message']}" for g in gaps)
        raise WindowIncompleteError(
            f"training window of {window_days} days ending {own_day}: expected at least {min_days} usable "
            f"days (min_days), found {len(partitions)}; missing or incomplete: {named}"
        )
    days = [str(p.get("partition_date") or "") for p in partitions]
    own_day = own_day or days[-1]  # a keyless one-day run: the day its prefix names, if any
    newest = partitions[-1]
    return {
        **newest,
        "partition_date": own_day,
        "file_count": sum(int(p["file_count"]) for p in partitions),
        "bytes": sum(int(p["bytes"]) for p in partitions),
        "fingerprint": window_fingerprint(partitions),
        "window_days": window_days,
        "min_days": min_days,
        "data_days": ",".join(day for day in days if day),
        "missing_days": ",".join(g["date"] for g in gaps),
        "gaps": list(gaps),
        "partitions": [dict(p) for p in partitions],
        "job_inputs": {input_name(day, own_day): {"type": "uri_folder", "path": p["data_uri"]}
                       for day, p in zip(days, partitions)},
    }
