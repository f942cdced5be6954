"""include/training/train.py run for real in the stack's base image (the AML job's environment).

Proves: the outputs are exactly the model, metrics, model card and plot; the model learns the label;
nothing of the training data reaches the outputs; bad inputs fail with a message naming the folder.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import docker
import pytest

from devstack import sample_data
from tests.integration.model_fixtures import NUMERIC, run_training, write_partition

EXPECTED_FILES = {"model.joblib", "metrics.json", "MODEL_CARD.md", "feature_importance.png"}


@pytest.fixture(scope="module")
def client(stack_env) -> docker.DockerClient:
    client = docker.DockerClient(base_url=stack_env["EDGE_DOCKER_HOST"], version="auto")
    client.images.get(stack_env["EDGE_BASE_IMAGE"])  # fails clearly if the stack has no base image
    return client


@pytest.fixture(scope="module")
def trained(client, stack_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    rows = write_partition(tmp / "data", rows=1500, parts=3, seed=3, token="qx7")
    code, logs = run_training(client, stack_env["EDGE_BASE_IMAGE"], tmp / "data", tmp / "out", "--seed", "3")
    assert code == 0, logs
    return rows, tmp / "out", logs


def test_outputs_are_exactly_model_metrics_card_and_plot(trained):
    _, out, logs = trained
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    assert (out / "feature_importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote model.joblib, metrics.json, MODEL_CARD.md, feature_importance.png" in logs


def test_metrics_describe_a_model_that_learned_the_label(trained):
    _, out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == NUMERIC
    assert metrics["label"] == "failure"
    assert metrics["rows_train"] + metrics["rows_test"] == 1500
    assert metrics["rows_test"] == 300
    assert metrics["sklearn_version"].startswith("1.2.")
    assert metrics["roc_auc"] > 0.75, metrics
    assert metrics["accuracy"] > 0.65, metrics
    assert 0 <= metrics["f1"] <= 1
    card = (out / "MODEL_CARD.md").read_text()
    assert f"| roc_auc | {metrics['roc_auc']:.4f} |" in card
    assert "feature_importance.png" in card


def test_no_training_data_reaches_the_outputs(trained):
    """Every output, binary ones included, is free of rows, identifiers, timestamps and feature values."""
    rows, out, logs = trained
    needles: set[bytes] = set()
    for row in rows:
        needles.add(",".join(row).encode())
        needles.add(row[0].encode())  # device id
        needles.add(row[1].encode())  # timestamp
        needles.add(row[1][:16].encode())
    needles.add(b"dev-qx7")
    values = {v for row in rows for v in row[2:7]}  # six decimals: cannot be a rounded metric
    for path in out.iterdir():
        blob = path.read_bytes()
        leaked = [n for n in needles if n in blob]
        assert not leaked, f"{path.name} contains training data: {leaked[:3]}"
        if path.suffix in (".json", ".md"):
            tokens = set(re.findall(r"-?\d+\.\d+", blob.decode()))
            assert not tokens & values, f"{path.name} contains feature values {sorted(tokens & values)[:3]}"
    assert not any(n.decode() in logs for n in needles)


def test_seeded_partition_trains(client, stack_env, tmp_path):
    """The stack's own seeded data (the same bytes devstack.seed uploads for the date)."""
    data = tmp_path / "date=2026-11-10"
    data.mkdir()
    for name, content in sample_data.partition_files(dt.date(2026, 11, 10), rows=4000, parts=4).items():
        (data / name).write_bytes(content)
    code, logs = run_training(client, stack_env["EDGE_BASE_IMAGE"], data, tmp_path / "out")
    assert code == 0, logs
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["csv_parts"] == 4 and metrics["rows_train"] + metrics["rows_test"] == 4000
    assert metrics["roc_auc"] > 0.7, metrics
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "out").iterdir())
    assert b"dev-00" not in blobs and b"2026-11-10T" not in blobs


@pytest.mark.parametrize("case, expected", [
    ("no_csv", "has no CSV parts"),
    ("missing_label", "label column 'failure' not found"),
    ("empty", "hold no data rows"),
    ("one_class", "exactly two classes"),
])
def test_bad_input_fails_with_a_message_naming_the_folder(client, stack_env, tmp_path, case, expected):
    data = tmp_path / "data"
    data.mkdir()
    (data / "_SUCCESS").write_text("")
    if case == "missing_label":
        (data / "part-00000.csv").write_text("device_id,temperature_c\ndev-1,70.0\n")
    elif case == "empty":
        (data / "part-00000.csv").write_text("device_id,temperature_c,failure\n")
    elif case == "one_class":
        write_partition(data, rows=50, parts=1)
        text = (data / "part-00000.csv").read_text().splitlines()
        (data / "part-00000.csv").write_text("\n".join([text[0]] + [l[:-1] + "0" for l in text[1:]]) + "\n")
    code, logs = run_training(client, stack_env["EDGE_BASE_IMAGE"], data, tmp_path / "out")
    assert code == 2, logs
    assert expected in logs and "input folder /data" in logs
    assert not any((tmp_path / "out").iterdir())
