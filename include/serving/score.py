"""Scoring HTTP app for the model image: the standard library's http.server, no web framework.

    GET  /health  -> 200 {"status": "ok", "model": {...}, "features": [...]}
    POST /score   {"rows": [{feature: value, ...}, ...]}  (or a bare JSON list of rows; a row may
                  also be a list of values in feature order)
                  -> 200 {"predictions": [0, 1, ...], "probabilities": [0.03, 0.91, ...]}

Malformed requests get 400 with {"error": "..."} naming what was expected and what was found. The
model directory holds model.joblib and metrics.json written by include/training/train.py, and
identity.json (the model's name and version, reported by /health) written when the image is built; the
image uses the training base image, so the pickle is loaded with the library versions it was written with.

Settings (environment): SCORING_HOST (default 0.0.0.0), SCORING_PORT (8080), MODEL_DIR (/opt/model),
SCORING_MAX_ROWS (10000), SCORING_MAX_BYTES (16 MiB),
SCORING_ALLOW_VERSION_MISMATCH (set to 1 to serve a model trained with another scikit-learn version).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class BadRequest(ValueError):
    """The request body is not a valid scoring request. The message is returned to the client."""


def parse_rows(payload: Any, features: list[str], *, max_rows: int = 10_000) -> list[list[float]]:
    """Turn a scoring request into a matrix in feature order. Missing values (null) become NaN.

    Extra keys in a row (an identifier, a timestamp, the label) are ignored, so whole telemetry
    records can be sent as they are.
    """
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    if isinstance(payload, dict) and "rows" not in payload:
        raise BadRequest(f"expected a JSON object with a 'rows' list (or a JSON list), found keys {sorted(payload)}")
    if not isinstance(rows, list):
        raise BadRequest(f"expected 'rows' to be a list, found {type(rows).__name__}")
    if not rows:
        raise BadRequest("expected at least one row, found an empty list")
    if len(rows) > max_rows:
        raise BadRequest(f"expected at most {max_rows} rows per request, found {len(rows)}")
    matrix: list[list[float]] = []
    for index, row in enumerate(rows):
        if isinstance(row, dict):
            missing = [f for f in features if f not in row]
            if missing:
                raise BadRequest(f"row {index}: missing features {missing}; expected {features}")
            values = [row[f] for f in features]
        elif isinstance(row, list):
            if len(row) != len(features):
                raise BadRequest(
                    f"row {index}: expected {len(features)} values in feature order {features}, found {len(row)}"
                )
            values = row
        else:
            raise BadRequest(f"row {index}: expected an object or a list, found {type(row).__name__}")
        matrix.append([_number(v, index, name) for v, name in zip(values, features)])
    return matrix


def _number(value: Any, index: int, name: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"row {index}: feature {name!r} must be a number or null, found {type(value).__name__}")
    number = float(value)
    if math.isinf(number):
        raise BadRequest(f"row {index}: feature {name!r} must be finite, found {value}")
    return number


def _pandas_frame(matrix: list[list[float]], features: list[str]):
    import pandas as pd

    return pd.DataFrame(matrix, columns=features, dtype="float64")


def _plain(value: Any) -> Any:
    """numpy scalars to JSON-safe Python values."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ScoringApp:
    """A loaded model and what /health reports about it."""

    def __init__(self, *, model: Any, features: list[str], info: dict[str, Any] | None = None,
                 max_rows: int = 10_000,
                 to_frame: Callable[[list[list[float]], list[str]], Any] = _pandas_frame) -> None:
        self.model = model
        self.features = list(features)
        self.info = dict(info or {})
        self.max_rows = max_rows
        self.to_frame = to_frame

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.info, "features": self.features}

    def score(self, payload: Any) -> dict[str, Any]:
        matrix = parse_rows(payload, self.features, max_rows=self.max_rows)
        frame = self.to_frame(matrix, self.features)
        predictions = [_plain(p) for p in self.model.predict(frame)]
        result: dict[str, Any] = {"predictions": predictions}
        if hasattr(self.model, "predict_proba"):
            result["probabilities"] = [_plain(row[-1]) for row in self.model.predict_proba(frame)]
        return result


def load_app(model_dir: Path, *, allow_version_mismatch: bool = False) -> ScoringApp:
    """Load model.joblib and its metrics.json; refuse a model written by another scikit-learn version."""
    import joblib
    import sklearn

    model_file = model_dir / "model.joblib"
    if not model_file.is_file():
        found = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else "no such folder"
        raise SystemExit(f"score.py: expected {model_file}, found {found}")
    metrics_file = model_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    trained_with = metrics.get("sklearn_version")
    if trained_with and trained_with != sklearn.__version__ and not allow_version_mismatch:
        raise SystemExit(
            f"score.py: {model_file} was trained with scikit-learn {trained_with}, this image has "
            f"{sklearn.__version__}; build the image from the training base image "
            "(or set SCORING_ALLOW_VERSION_MISMATCH=1)"
        )
    try:
        model = joblib.load(model_file)
    except Exception as exc:  # a corrupt or foreign file: say which and why, without a traceback
        raise SystemExit(f"score.py: cannot load the model {model_file}: {type(exc).__name__}: {exc}") from None
    features = metrics.get("features") or [str(f) for f in getattr(model, "feature_names_in_", [])]
    if not features:
        raise SystemExit(f"score.py: no feature list in {metrics_file} nor in the model's feature_names_in_")
    identity_file = model_dir / "identity.json"  # written into the image's model layer at build time
    identity = json.loads(identity_file.read_text()) if identity_file.is_file() else {}
    info = {
        "name": str(identity.get("name", "")),
        "version": str(identity.get("version", "")),
        "label": metrics.get("label", ""),
        "sklearn_version": sklearn.__version__,
    }
    return ScoringApp(model=model, features=features, info=info,
                      max_rows=int(os.environ.get("SCORING_MAX_ROWS", "10000")))


class ScoringHandler(BaseHTTPRequestHandler):
    app: ScoringApp  # set on the server class by make_server
    max_bytes = 16 * 1024 * 1024
    server_version = "edge-scoring/1"

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?", 1)[0] == "/health":
            self._send(HTTPStatus.OK, self.app.health())
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route GET {self.path}; try GET /health or POST /score"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/score":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route POST {self.path}; try POST /score"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._send(HTTPStatus.BAD_REQUEST, {"error": "Content-Length is not a number"})
            return
        if length <= 0:
            self._send(HTTPStatus.BAD_REQUEST, {"error": "expected a JSON body, found an empty request"})
            return
        if length > self.max_bytes:
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       {"error": f"body of {length} bytes exceeds the limit of {self.max_bytes}"})
            return
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": f"body is not valid JSON: {exc}"})
            return
        try:
            result = self.app.score(payload)
        except BadRequest as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except Exception as exc:  # the model itself failed: a server error, logged with its type
            self.log_error("prediction failed: %s: %s", type(exc).__name__, exc)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"prediction failed: {type(exc).__name__}"})
            return
        self._send(HTTPStatus.OK, result)

    def do_PUT(self) -> None:  # noqa: N802
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use GET /health or POST /score"})

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # One line per request on stderr (docker logs); bodies are never logged.
        sys.stderr.write("score.py: %s - %s\n" % (self.address_string(), format % args))


def make_server(app: ScoringApp, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundScoringHandler", (ScoringHandler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    host = os.environ.get("SCORING_HOST", "0.0.0.0")
    port = int(os.environ.get("SCORING_PORT", "8080"))
    model_dir = Path(os.environ.get("MODEL_DIR", "/opt/model"))
    app = load_app(model_dir, allow_version_mismatch=os.environ.get("SCORING_ALLOW_VERSION_MISMATCH") == "1")
    server = make_server(app, host, port)
    # PID 1 in a container ignores SIGTERM unless it installs a handler: make `docker stop` quick.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"score.py: serving {model_dir} ({len(app.features)} features) on {host}:{port}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
