"""The seeded data: deterministic per date, well-formed CSV, and a label a model can learn."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from devstack import sample_data, seed

DAY = dt.date(2026, 11, 10)


def test_same_date_gives_identical_bytes_and_other_dates_differ():
    a = sample_data.partition_files(DAY, rows=500, parts=3)
    b = sample_data.partition_files(DAY, rows=500, parts=3)
    assert a == b
    assert sample_data.partition_files(DAY + dt.timedelta(days=1), rows=500, parts=3) != a


def test_partition_has_parts_and_an_empty_success_marker_and_all_rows():
    files = sample_data.partition_files(DAY, rows=1001, parts=4)
    assert list(files) == ["part-00000.csv", "part-00001.csv", "part-00002.csv", "part-00003.csv",
                           "_SUCCESS"]
    assert files["_SUCCESS"] == b""
    total = 0
    for name, data in files.items():
        if name == "_SUCCESS":
            continue
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        assert tuple(rows[0].keys()) == sample_data.COLUMNS
        for row in rows:
            assert row["timestamp"].startswith("2026-11-10T")
            assert row["failure"] in {"0", "1"}
            float(row["temperature_c"]), float(row["vibration_mm_s"]), int(row["rpm"])
        total += len(rows)
    assert total == 1001


def test_label_depends_on_the_features():
    rows = sample_data.generate_rows(DAY, 4000)
    rate = sum(r[-1] for r in rows) / len(rows)
    assert 0.05 < rate < 0.4, rate
    # Rank the rows by the true risk: the riskiest fifth fails far more often than the safest fifth.
    scored = sorted(rows, key=lambda r: sample_data.failure_probability(
        temperature_c=r[2], vibration_mm_s=r[3], pressure_kpa=r[4], rpm=r[5], runtime_hours=r[6]))
    fifth = len(scored) // 5
    low = sum(r[-1] for r in scored[:fifth]) / fifth
    high = sum(r[-1] for r in scored[-fifth:]) / fifth
    assert high > low + 0.3, (low, high)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="rows and parts"):
        sample_data.partition_files(DAY, rows=0, parts=1)


def test_seed_layout_and_date_range():
    assert seed.partition_prefix(DAY) == "telemetry/date=2026-11-10/"
    days = seed.date_range(dt.date(2026, 11, 29), dt.date(2026, 12, 1))
    assert [d.isoformat() for d in days] == ["2026-11-29", "2026-11-30", "2026-12-01"]
    with pytest.raises(ValueError, match="before"):
        seed.date_range(dt.date(2026, 11, 2), dt.date(2026, 11, 1))
