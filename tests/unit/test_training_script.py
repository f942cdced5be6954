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


def test_command_line_reports_input_errors_with_exit_code_2(tmp_path):
    out = subprocess.run([sys.executable, str(TRAIN), "--data", str(tmp_path), "--output", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"input folder {tmp_path} has no CSV parts" in out.stderr


def test_test_size_must_be_a_fraction(train, tmp_path):
    with pytest.raises(train.TrainingInputError, match="--test-size"):
        train.train(tmp_path, tmp_path / "o", test_size=1.5)
