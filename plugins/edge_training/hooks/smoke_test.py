"""The model image's smoke test: the probe that runs inside the container, and the verdict on its answer.

The probe is a package file (edge_training/probes/smoke_probe.py) whose text the hook hands to the
image's own python3 with ``docker exec``; check_predictions judges what /score answered.
"""

from __future__ import annotations

import json
import math
import socket
from importlib import resources
from typing import Any

from edge_training.exceptions import SmokeTestError


def smoke_probe_source() -> str:
    """The probe's source text, for ``python3 -c`` in the container."""
    return resources.files("edge_training.probes").joinpath("smoke_probe.py").read_text()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_predictions(result: dict[str, Any], rows: int, *, image: str) -> list[Any]:
    """Smoke-test verdict on a /score response body: a list of ``rows`` predictions of one scalar type."""
    if not isinstance(result, dict) or not isinstance(result.get("predictions"), list):
        raise SmokeTestError(
            f"smoke test of {image}: expected a JSON object with a 'predictions' list from /score, "
            f"found {str(result)[:300]}"
        )
    predictions = result["predictions"]
    if len(predictions) != rows:
        raise SmokeTestError(
            f"smoke test of {image}: expected {rows} predictions for {rows} rows, found {len(predictions)}"
        )
    kinds = {("number" if isinstance(p, (int, float)) and not isinstance(p, bool) else
              "string" if isinstance(p, str) else type(p).__name__) for p in predictions}
    if len(kinds) != 1 or kinds - {"number", "string"}:
        raise SmokeTestError(
            f"smoke test of {image}: expected predictions that are all numbers or all strings, "
            f"found types {sorted(kinds)}"
        )
    probabilities = result.get("probabilities")
    if probabilities is not None:
        if not isinstance(probabilities, list) or len(probabilities) != rows or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0 for p in probabilities
        ):
            raise SmokeTestError(
                f"smoke test of {image}: expected {rows} probabilities between 0 and 1, found "
                f"{str(probabilities)[:200]}"
            )
    return predictions


#: The model version's tag that keeps the known request and the answer its image gave when it was built.
SMOKE_CHECK_TAG = "smoke_check"


def smoke_check_tag(smoke: dict[str, Any] | None) -> str | None:
    """The ``smoke_check`` tag for a build's smoke test: compact JSON of the request rows, the predictions
    and the probabilities (rounded to 6 places); None when the build ran no smoke test (image reused)."""
    if not smoke or smoke.get("request") is None or smoke.get("predictions") is None:
        return None
    rows = [[row[f] for f in row] if isinstance(row, dict) else row for row in smoke["request"]]
    features = list(smoke["request"][0]) if smoke["request"] and isinstance(smoke["request"][0], dict) else None
    probabilities = smoke.get("probabilities")
    record = {"features": features, "rows": rows, "predictions": smoke["predictions"],
              "probabilities": [round(p, 6) for p in probabilities] if probabilities is not None else None}
    return json.dumps(record, separators=(",", ":"))


def recorded_request(tag: str | None) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """The request rows (as objects keyed by feature, as /score takes them) and the recorded answer."""
    if not tag:
        return None, None
    record = json.loads(tag)
    features = record.get("features")
    rows = [dict(zip(features, row)) for row in record["rows"]] if features else record["rows"]
    return rows, record


def check_same_answer(answer: dict[str, Any], record: dict[str, Any], *, image: str,
                      tolerance: float = 1e-6) -> None:
    """The deployed container must answer the known request as the model's image did when it was built."""
    if list(answer["predictions"]) != list(record["predictions"]):
        raise SmokeTestError(
            f"smoke test of {image}: expected the predictions the model gave when its image was built, "
            f"{record['predictions']}, found {answer['predictions']}"
        )
    expected, found = record.get("probabilities"), answer.get("probabilities")
    if expected is not None:
        if found is None or len(found) != len(expected) or any(
            not math.isclose(f, e, abs_tol=tolerance) for f, e in zip(found, expected)
        ):
            raise SmokeTestError(
                f"smoke test of {image}: expected the probabilities the model gave when its image was built, "
                f"{expected}, found {found}"
            )
