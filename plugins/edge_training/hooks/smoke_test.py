"""The model image's smoke test: the probe that runs inside the container, and the verdict on its answer.

The probe is a package file (edge_training/probes/smoke_probe.py) whose text the hook hands to the
image's own python3 with ``docker exec``; check_predictions judges what /score answered.
"""

from __future__ import annotations

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
