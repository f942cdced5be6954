"""Readers of docker-py's build and push streams: they report errors as items, not exceptions.

A build stream becomes a BuildReport (steps, which came from cache, the image id); a push stream
becomes the pushed manifest digest. An error item raises an exception naming the step or the registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge_training.exceptions import ContainerImageError, RegistryAuthError, RegistryPushError

_AUTH_WORDS = ("unauthorized", "authentication required", "no basic auth credentials", "denied",
               "incorrect username or password")


@dataclass
class BuildStep:
    number: int
    instruction: str
    cached: bool = False


@dataclass
class BuildReport:
    """What a classic-builder build stream said: the steps, which came from cache, the image id."""

    image_id: str | None = None
    steps: list[BuildStep] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cached_steps(self) -> list[int]:
        return [s.number for s in self.steps if s.cached]

    def summary(self) -> dict[str, Any]:
        """JSON-safe: seconds, and per step the instruction (truncated) and whether it came from cache."""
        return {
            "seconds": round(self.seconds, 3),
            "steps": [{"number": s.number, "instruction": s.instruction[:120], "cached": s.cached}
                      for s in self.steps],
            "cached_steps": self.cached_steps,
        }


_STEP = re.compile(r"^Step (\d+)/\d+ : (.*)$")


def parse_build_stream(items: Iterable[dict[str, Any]], *, image: str = "image") -> BuildReport:
    """Read a docker-py build stream; raise ContainerImageError on an error item, naming the step."""
    report = BuildReport()
    for item in items:
        if "error" in item or "errorDetail" in item:
            message = item.get("error") or (item.get("errorDetail") or {}).get("message") or str(item)
            step = report.steps[-1] if report.steps else None
            where = f" at step {step.number} ({step.instruction})" if step else ""
            tail = "".join(report.log[-15:]).rstrip()
            raise ContainerImageError(f"docker build of {image} failed{where}: {message.strip()}\n{tail}")
        aux = item.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            report.image_id = aux["ID"]
        text = item.get("stream")
        if not text:
            continue
        report.log.append(text)
        for line in text.splitlines():
            line = line.strip()
            match = _STEP.match(line)
            if match:
                report.steps.append(BuildStep(int(match.group(1)), match.group(2)))
            elif line == "---> Using cache" and report.steps:
                report.steps[-1].cached = True
            elif line.startswith("Successfully built ") and not report.image_id:
                report.image_id = line.split()[-1]
    if not report.image_id:
        raise ContainerImageError(
            f"docker build of {image}: the build stream ended without an image id; last output: "
            + "".join(report.log[-5:]).strip()
        )
    return report


def is_auth_error(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in _AUTH_WORDS)


def parse_push_stream(items: Iterable[dict[str, Any]], *, ref: str, registry: str) -> str:
    """Read a docker-py push stream: the pushed manifest digest, or a named error.

    Push errors arrive as ``{"error": ...}`` items, not as exceptions.
    """
    digest = None
    for item in items:
        if "error" in item or "errorDetail" in item:
            message = (item.get("error") or (item.get("errorDetail") or {}).get("message") or str(item)).strip()
            if is_auth_error(message):
                raise RegistryAuthError(
                    f"registry {registry} refused the push of {ref}: {message}. Check the login and "
                    "password of the registry connection (and that the account may push)."
                )
            raise RegistryPushError(f"push of {ref} to {registry} failed: {message}")
        aux = item.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
        status = item.get("status") or ""
        match = re.search(r"digest: (sha256:[0-9a-f]{64})", status)
        if match and not digest:
            digest = match.group(1)
    if not digest:
        raise RegistryPushError(f"push of {ref} to {registry}: the push stream ended without a digest")
    return digest
