"""include/training/train.py: input discovery and validation (standard library only, runs anywhere).

Training itself needs scikit-learn and runs in the base image: tests/integration/test_training_in_base_image.py.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[2] / "include" / "training" / "train.py"
HEADER = "device_id,timestamp,temperature_c,vibration_mm_s,pressure_kpa,rpm,runtime_hours,failure\n"
ROW = "dev-001,2026-11-10T00:00:00Z,70.1,3.2,101.0,1500,1200.5,0\n"


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("edge_train_script", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_finds_csv_parts_and_ignores_markers(train, tmp_path):
    write(tmp_path / "part-00001.csv", HEADER + ROW)
    write(tmp_path / "part-00000.csv", HEADER + ROW)
    write(tmp_path / "_SUCCESS", "")
    write(tmp_path / "date=2026-11-10_manifest.json", "{}")
    write(tmp_path / "nested" / "part-00002.csv", HEADER + ROW)
    parts = train.find_csv_parts(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in parts] == [
        "nested/part-00002.csv", "part-00000.csv", "part-00001.csv"]
    assert train.check_headers(parts, "failure", tmp_path)[-1] == "failure"
    assert train.count_rows(parts) == 3


def test_no_csv_names_the_folder_and_what_is_there(train, tmp_path):
    write(tmp_path / "_SUCCESS", "")
    with pytest.raises(train.TrainingInputError) as err:
        train.find_csv_parts(tmp_path)
    assert str(tmp_path) in str(err.value) and "_SUCCESS" in str(err.value)


def test_missing_folder(train, tmp_path):
    with pytest.raises(train.TrainingInputError, match="does not exist"):
        train.find_csv_parts(tmp_path / "nope")


def test_missing_label_lists_the_columns(train, tmp_path):
    part = write(tmp_path / "part-00000.csv", HEADER + ROW)
    with pytest.raises(train.TrainingInputError) as err:
        train.check_headers([part], "broken", tmp_path)
    assert "'broken'" in str(err.value) and "temperature_c" in str(err.value) and str(tmp_path) in str(err.value)


def test_parts_with_different_columns_are_refused(train, tmp_path):
    a = write(tmp_path / "part-00000.csv", HEADER + ROW)
    b = write(tmp_path / "part-00001.csv", "device_id,failure\ndev-1,0\n")
    with pytest.raises(train.TrainingInputError, match="part-00001.csv"):
        train.check_headers([a, b], "failure", tmp_path)


@pytest.mark.parametrize("contents", [["", ""], [HEADER, HEADER]])
def test_empty_data_is_refused_before_any_library_is_loaded(train, tmp_path, contents):
    for i, text in enumerate(contents):
        write(tmp_path / f"part-{i:05d}.csv", text)
    with pytest.raises(train.TrainingInputError) as err:
        train.train(tmp_path, tmp_path / "out", label="failure")
    assert str(tmp_path) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_each_day_of_a_window_is_an_input_folder_and_an_empty_one_is_named(train, tmp_path):
    """One --data per day of a training window: every folder is read (rows counted across them), and a
    folder without CSV parts is named before any library is loaded."""
    assert train.parse_args(["--data", "a", "--data", "b", "--output", "o"]).data == [Path("a"), Path("b")]
    days = [tmp_path / "d1", tmp_path / "d2"]
    write(days[0] / "part-00000.csv", HEADER + ROW)
    write(days[1] / "part-00000.csv", HEADER + ROW + ROW)
    assert train.count_rows([p for day in days for p in train.find_csv_parts(day)]) == 3
    write(tmp_path / "d3" / "_SUCCESS", "")
    with pytest.raises(train.TrainingInputError) as err:
        train.train([*days, tmp_path / "d3"], tmp_path / "out")
    assert f"input folder {tmp_path / 'd3'} has no CSV parts" in str(err.value)
    write(tmp_path / "d3" / "part-00000.csv", HEADER)
    write(days[0] / "part-00000.csv", HEADER)
    write(days[1] / "part-00000.csv", HEADER)
    with pytest.raises(train.TrainingInputError) as err:
        train.train([*days, tmp_path / "d3"], tmp_path / "out")
    assert all(str(day) in str(err.value) for day in days), str(err.value)  # a window's error names its days
    assert not (tmp_path / "out").exists()


def test_command_line_reports_input_errors_with_exit_code_2(tmp_path):
    out = subprocess.run([sys.executable, str(TRAIN), "--data", str(tmp_path), "--output", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"input folder {tmp_path} has no CSV parts" in out.stderr


def test_test_size_must_be_a_fraction(train, tmp_path):
    with pytest.raises(train.TrainingInputError, match="--test-size"):
        train.train(tmp_path, tmp_path / "o", test_size=1.5)


def test_min_seconds_is_off_by_default_and_refuses_a_negative_time(train, capsys):
    assert train.parse_args(["--data", "d", "--output", "o"]).min_seconds == 0
    assert train.parse_args(["--data", "d", "--output", "o", "--min-seconds", "60"]).min_seconds == 60
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            train.parse_args(["--data", "d", "--output", "o", "--min-seconds", bad])
    assert "--min-seconds" in capsys.readouterr().err


def test_hold_until_waits_out_the_rest_of_min_seconds_only(train):
    slept = []
    assert train.hold_until(100.0, 60, clock=lambda: 115.0, sleep=slept.append) == 45.0
    assert train.hold_until(100.0, 60, clock=lambda: 170.0, sleep=slept.append) == 0.0  # training was longer
    assert train.hold_until(100.0, 0, clock=lambda: 100.0, sleep=slept.append) == 0.0
    assert slept == [45.0]


@pytest.mark.parametrize("min_seconds, expected_hold", [(None, None), ("0", None), ("30", 30.0)])
def test_the_job_holds_for_min_seconds_after_training_and_only_when_asked(train, tmp_path, monkeypatch, capsys,
                                                                         min_seconds, expected_hold):
    """Training first (outputs written), then the wait, counted from main's start; without --min-seconds
    main never waits."""
    events = []
    metrics = {"accuracy": 0.9, "roc_auc": 0.95, "f1": 0.8, "rows_train": 8, "rows_test": 2, "input_folders": 1}
    monkeypatch.setattr(train, "train", lambda *a, **k: events.append("trained") or metrics)
    monkeypatch.setattr(train, "hold_until", lambda started, seconds: events.append(("held", seconds)) or 0.0)
    argv = ["--data", str(tmp_path), "--output", str(tmp_path / "o")]
    if min_seconds is not None:
        argv += ["--min-seconds", min_seconds]
    assert train.main(argv) == 0
    assert events == ["trained"] + ([("held", expected_hold)] if expected_hold else [])
    if expected_hold:
        assert "--min-seconds 30: running until then" in capsys.readouterr().out
