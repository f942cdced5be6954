"""include/serving/score.py: request parsing and the HTTP contract (/health, /score, errors).

The app is served on a loopback port with a stand-in predictor (the real model needs scikit-learn,
which lives in the base image; the image's smoke test and tests/integration cover the real thing).
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SCORE = Path(__file__).resolve().parents[2] / "include" / "serving" / "score.py"
FEATURES = ["temperature_c", "vibration_mm_s", "rpm"]


@pytest.fixture(scope="module")
def score():
    spec = importlib.util.spec_from_file_location("edge_score_app", SCORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ThresholdModel:
    """Predicts 1 when the first feature exceeds 80; probability grows with it."""

    def predict(self, rows):
        return [int(r[0] > 80) for r in rows]

    def predict_proba(self, rows):
        return [[1 - min(r[0] / 100, 1), min(r[0] / 100, 1)] for r in rows]


@pytest.fixture(scope="module")
def server(score):
    app = score.ScoringApp(model=ThresholdModel(), features=FEATURES, info={"name": "m", "version": "3"},
                           max_rows=5, to_frame=lambda matrix, cols: matrix)
    srv = score.make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def call(url: str, body: bytes | None = None, method: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_parse_rows_objects_lists_and_nulls(score):
    rows = [{"temperature_c": 90, "vibration_mm_s": 1.5, "rpm": None, "device_id": "ignored"}, [1, 2, 3]]
    matrix = score.parse_rows({"rows": rows}, FEATURES)
    assert matrix[0][:2] == [90.0, 1.5] and math.isnan(matrix[0][2])
    assert matrix[1] == [1.0, 2.0, 3.0]
    assert score.parse_rows([[1, 2, 3]], FEATURES) == [[1.0, 2.0, 3.0]]


@pytest.mark.parametrize("payload, message", [
    ({"data": []}, "'rows'"),
    ({"rows": "x"}, "list"),
    ({"rows": []}, "at least one row"),
    ({"rows": [{"temperature_c": 1}]}, "missing features ['vibration_mm_s', 'rpm']"),
    ({"rows": [[1, 2]]}, "expected 3 values"),
    ({"rows": [{"temperature_c": "hot", "vibration_mm_s": 1, "rpm": 1}]}, "'temperature_c' must be a number"),
    ({"rows": [{"temperature_c": True, "vibration_mm_s": 1, "rpm": 1}]}, "must be a number"),
    ({"rows": [[1, 2, float("inf")]]}, "finite"),
    ({"rows": ["a"]}, "expected an object or a list"),
    ({"rows": [[1, 2, 3]] * 6}, "at most 5 rows"),
])
def test_parse_rows_refuses_bad_requests(score, payload, message):
    with pytest.raises(score.BadRequest, match=None) as err:
        score.parse_rows(payload, FEATURES, max_rows=5)
    assert message in str(err.value)


def test_health(server):
    status, body = call(f"{server}/health")
    assert status == 200
    assert body == {"status": "ok", "model": {"name": "m", "version": "3"}, "features": FEATURES}


def test_score_returns_one_prediction_per_row(server):
    rows = [{"temperature_c": 90, "vibration_mm_s": 1, "rpm": 1500}, {"temperature_c": 20, "vibration_mm_s": 1, "rpm": 1}]
    status, body = call(f"{server}/score", json.dumps({"rows": rows}).encode())
    assert status == 200
    assert body["predictions"] == [1, 0]
    assert body["probabilities"] == pytest.approx([0.9, 0.2])
    status, body = call(f"{server}/score", json.dumps([[85, 0, 0]]).encode())
    assert (status, body["predictions"]) == (200, [1])


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"rows": []}', 400, "at least one row"),
    (b'{"rows": [[1]]}', 400, "expected 3 values"),
    (None, 400, "empty request"),
])
def test_score_errors_are_json_400(server, body, status, message):
    got_status, got = call(f"{server}/score", body, method="POST")
    assert got_status == status
    assert message in got["error"]


def test_unknown_routes_and_methods(server):
    assert call(f"{server}/nope")[0] == 404
    assert call(f"{server}/predict", b"{}")[0] == 404
    assert call(f"{server}/score", b"{}", method="PUT")[0] == 405


def test_model_failure_is_a_500_without_internals(score):
    class Broken:
        def predict(self, rows):
            raise RuntimeError("secret internals")

    app = score.ScoringApp(model=Broken(), features=["a"], to_frame=lambda m, c: m)
    srv = score.make_server(app, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        status, body = call(f"http://127.0.0.1:{srv.server_address[1]}/score", b'{"rows": [[1]]}')
    finally:
        srv.shutdown()
        srv.server_close()
    assert status == 500
    assert body == {"error": "prediction failed: RuntimeError"}
