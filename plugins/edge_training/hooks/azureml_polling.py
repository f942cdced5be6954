"""How often the AML trigger, sensor and sync operator poll a job, and how they back off on errors.

Kept apart from the hook because it is policy, not SDK calls: the polling ramp, the error backoff, which
HTTP statuses are worth retrying and how a server's Retry-After is read. Pure, so it is tested alone.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import asdict, dataclass
from datetime import timezone

#: HTTP statuses a retry may cure, for every service this package calls (AML, Stack Hub blob storage).
#: Anything else (400, 401, 403, 404, 409...) is a real error.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


# --- polling policy (pure) -----------------------------------------------------------------------
@dataclass(frozen=True)
class PollPolicy:
    """How often the trigger, the sensor and the sync operator look at a job.

    Healthy polling ramps from ``initial_s`` by ``factor`` up to ``max_s`` with up to ``jitter``
    (a fraction) taken off each interval below the cap, so many jobs started together spread
    out. At the cap the interval is exactly ``max_s``: the phases are already spread, and a fixed
    15 s keeps both promises at once (at most 4 status calls a minute on a long job, and a
    finished job noticed within 15 s). Errors back off separately, from ``error_initial_s``
    doubling to ``error_max_s`` with full jitter, and never sooner than a server's Retry-After.
    """

    initial_s: float = 5.0
    factor: float = 1.5
    max_s: float = 15.0
    jitter: float = 0.2
    error_initial_s: float = 2.0
    error_max_s: float = 60.0

    def interval(self, polls_done: int, rand: float) -> float:
        """Seconds to wait after ``polls_done`` healthy polls; ``rand`` is uniform in [0, 1)."""
        raw = self.initial_s * self.factor ** max(polls_done, 0)
        if raw >= self.max_s:
            return self.max_s
        return raw * (1.0 - self.jitter * rand)

    def error_delay(self, consecutive_errors: int, rand: float, retry_after_s: float | None = None) -> float:
        """Seconds to wait after the n-th consecutive transient error (n >= 1)."""
        ceiling = min(self.error_max_s, self.error_initial_s * 2 ** max(consecutive_errors - 1, 0))
        delay = ceiling * (0.5 + 0.5 * rand)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.error_max_s * 5))
        return delay

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
