"""How often the AML trigger, sensor and sync operator poll a job, and how they back off on errors.

Kept apart from the hook because it is policy, not SDK calls. The error backoff itself (and which
HTTP statuses are worth retrying) is the package's one backoff in :mod:`edge_training.retry`; this
module only says how fast the AML wait ramps and where its error backoff starts and stops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edge_training.retry import backoff_delay


@dataclass(frozen=True)
class PollPolicy:
    """How often the trigger, the sensor and the sync operator look at a job.

    Healthy polling ramps from ``initial_s`` by ``factor`` up to ``max_s`` with up to ``jitter``
    (a fraction) taken off each interval below the cap, so many jobs started together spread
    out. At the cap the interval is exactly ``max_s``: the phases are already spread, and a fixed
    15 s keeps both promises at once (at most 4 status calls a minute on a long job, and a
    finished job noticed within 15 s). Errors back off separately, from ``error_initial_s``
    doubling to ``error_max_s`` with half jitter, and never sooner than a server's Retry-After.
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
        return backoff_delay(
            consecutive_errors - 1,
            base_s=self.error_initial_s,
            cap_s=self.error_max_s,
            rand=rand,
            retry_after_s=retry_after_s,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
