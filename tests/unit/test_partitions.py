"""Partition key → storage layout mapping, and the validation that keeps keys inside their prefix."""

from __future__ import annotations

import datetime as dt

import pytest

from edge_training.exceptions import InvalidPartitionKeyError
from edge_training.partitions import partition_date, partition_prefix, validate_prefix


@pytest.mark.parametrize(
    "key, expected",
    [
        ("2026-11-10T02:00:00", dt.date(2026, 11, 10)),  # CronPartitionTimetable's key
        ("2026-11-10", dt.date(2026, 11, 10)),
        ("2026-11-10T02:00", dt.date(2026, 11, 10)),
        ("2026-11-10T02:00:00+00:00", dt.date(2026, 11, 10)),
        ("2026-11-10T23:30:00Z", dt.date(2026, 11, 10)),
        ("2026-11-10 02:00:00", dt.date(2026, 11, 10)),
        (dt.date(2026, 2, 28), dt.date(2026, 2, 28)),
        (dt.datetime(2026, 11, 10, 2, 0, tzinfo=dt.timezone.utc), dt.date(2026, 11, 10)),
    ],
)
def test_partition_date_accepts_keys_and_dates(key, expected):
    assert partition_date(key) == expected


@pytest.mark.parametrize(
    "key, reason",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("2026-13-01", "not a valid calendar date"),
        ("2026-02-30", "not a valid calendar date"),
        ("20261110", "not a date"),
        ("2026-11-10T02:00:00junk", "not a date"),
        ("../2026-11-10", "'..'"),
        ("2026-11-10/../../secrets", "'..'"),
        ("/etc/passwd", "absolute"),
        ("%2e%2e%2f2026-11-10", "percent-encoding"),
        ("2026-11-10%2f..", "percent-encoding"),
        ("2026-11-10\\..\\x", "backslash"),
        ("2026-11-10\n", "control character"),
        ("2026-11-10\x00", "control character"),
        ("2026-11-10\u202e", "control character"),  # right-to-left override (format char)
        ("２０２６-11-10", "compatibility"),  # full-width digits
        ("2026-11-10/x", "'/'"),
    ],
)
def test_partition_date_rejects_bad_keys(key, reason):
    with pytest.raises(InvalidPartitionKeyError, match=reason):
        partition_date(key)


def test_partition_date_rejects_other_types():
    with pytest.raises(InvalidPartitionKeyError, match="expected str, date or datetime"):
        partition_date(20261110)


@pytest.mark.parametrize(
    "template, key, expected",
    [
        ("telemetry/date={date}/", "2026-11-10T02:00:00", "telemetry/date=2026-11-10/"),
        ("telemetry/date={partition_date}", "2026-11-10", "telemetry/date=2026-11-10/"),
        ("telemetry/", "2026-11-10T02:00:00", "telemetry/date=2026-11-10/"),
        ("telemetry", dt.date(2026, 11, 10), "telemetry/date=2026-11-10/"),
        ("tests/complete/date={date}/", "2026-11-10", "tests/complete/date=2026-11-10/"),
        ("telemetry/date=2026-11-10/", None, "telemetry/date=2026-11-10/"),
        ("telemetry/date=2026-11-10", None, "telemetry/date=2026-11-10/"),
    ],
)
def test_partition_prefix(template, key, expected):
    assert partition_prefix(template, key) == expected


@pytest.mark.parametrize(
    "template, key, reason",
    [
        ("../telemetry/date={date}/", "2026-11-10", "'..'"),
        ("telemetry/../../date={date}/", "2026-11-10", "'..'"),
        ("/telemetry/date={date}/", "2026-11-10", "absolute"),
        ("https://evil.example/date={date}/", "2026-11-10", "absolute"),
        ("C:/data/date={date}/", "2026-11-10", "absolute"),
        ("telemetry%2f..%2f/date={date}/", "2026-11-10", "percent"),
        ("telemetry\\date={date}", "2026-11-10", "backslash"),
        ("telemetry//date={date}/", "2026-11-10", "empty path segment"),
        ("telemetry/./date={date}/", "2026-11-10", "'..' or '.'"),
        ("telemetry/date={hour}/", "2026-11-10", "unknown placeholder"),
        ("telemetry/date={date}/", None, "no partition key"),
        ("telemetry/date={date}/", "../../x", "'..'"),
        ("tele metry/", "2026-11-10", "expected only letters"),
        ("/", None, "absolute"),
        ("", None, "empty"),
    ],
)
def test_partition_prefix_rejects_escapes(template, key, reason):
    with pytest.raises(InvalidPartitionKeyError, match=reason):
        partition_prefix(template, key)


def test_validate_prefix_normalises_trailing_slash():
    assert validate_prefix("a/b///") == "a/b/"
    with pytest.raises(InvalidPartitionKeyError, match="absolute"):
        validate_prefix("///")


def test_partition_date_str_and_date_in_prefix():
    from edge_training.partitions import date_in_prefix, partition_date_str

    assert partition_date_str("2026-11-10T02:00:00") == "2026-11-10"
    assert date_in_prefix("telemetry/date=2026-11-10/") == dt.date(2026, 11, 10)
    assert date_in_prefix("date=2026-11-10") == dt.date(2026, 11, 10)
    assert date_in_prefix("telemetry/mydate=2026-11-10/") is None
    assert date_in_prefix("telemetry/") is None
    with pytest.raises(InvalidPartitionKeyError, match="no partition key"):
        partition_date_str(None)
