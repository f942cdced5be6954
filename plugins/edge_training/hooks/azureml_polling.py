"""How often the AML trigger, sensor and sync operator poll a job, and how they back off on errors.

Kept apart from the hook because it is policy, not SDK calls. The error backoff itself (and which
HTTP statuses are worth retrying) is the package's one backoff in :mod:`edge_training.retry`; this
module only says how fast the AML wait ramps and where its error backoff starts and stops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edge_training.exceptions import InvalidInputError
from edge_training.retry import backoff_delay


@dataclass(frozen=True)
class PollPolicy:
    """How often the trigger, the sensor and the sync operator look at a job.

    Healthy polling ramps from ``initial_s`` by ``factor`` up to ``max_s`` with up to ``jitter``
    (a fraction) taken off each interval below the cap, so many jobs started together spread
    out. At the cap the interval is exactly ``max_s``: the phases are already spread, and a fixed
    15 s keeps both promises at once (at most 4 status calls a minute on a long job, and a finished
    job noticed within 15 s). Errors back off separately, from ``error_initial_s`` doubling to
    ``error_max_s`` with half jitter, and never sooner than a server's Retry-After.

    The first look waits ``initial_s`` (5 s): a trigger that fires within a few seconds of the
    deferral can beat the scheduler to the deferred task, and Airflow 3.3.2 then marks the task
    UP_FOR_RETRY ("finished with state success, but the task instance's state attribute is queued"),
    which costs a retry delay. A 2 s first look did exactly that in bench/overhead.py. The package's
    ``PreloadingLocalExecutor`` now keeps track of the resume, so the stale exit no longer fails it
    there; the 5 s stays for the other executors (the compose file's CeleryExecutor).

    A running job's log is read at a poll only when it is due (``log_wait``): at once while it grows,
    and after each read that found nothing new twice as long as before, from ``initial_s`` up to
    ``log_quiet_max_s``. A quiet job then costs 60 / max_s status calls and 60 / log_quiet_max_s log
    reads a minute (4 + 1 by default); a new line shows in the task log within ``log_quiet_max_s``
    plus one poll, and every line at the job's end.
    """

    initial_s: float = 5.0
    factor: float = 1.5
    max_s: float = 15.0
    jitter: float = 0.2
    error_initial_s: float = 2.0
    error_max_s: float = 60.0
    log_quiet_max_s: float = 60.0

    def interval(self, polls_done: int, rand: float) -> float:
        """Seconds to wait after ``polls_done`` healthy polls; ``rand`` is uniform in [0, 1)."""
        raw = self.initial_s * self.factor ** max(polls_done, 0)
        if raw >= self.max_s:
            return self.max_s
        return raw * (1.0 - self.jitter * rand)

    def log_wait(self, previous_wait_s: float, grew: bool) -> float:
        """Seconds until the log is due again after a read that found it grown (``grew``) or not."""
        if grew:
            return 0.0
        return min(self.log_quiet_max_s, max(2.0 * previous_wait_s, self.initial_s))

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


def poll_max_seconds(setting: str | None) -> float:
    """The ``EDGE_AML_POLL_MAX_SECONDS`` deployment setting as seconds (unset or empty: ``PollPolicy.max_s``)."""
    if setting in (None, ""):
        return PollPolicy.max_s
    try:
        seconds = float(setting)
    except ValueError:
        seconds = float("nan")
    if not 1.0 <= seconds <= 300.0:
        raise InvalidInputError(f"EDGE_AML_POLL_MAX_SECONDS {setting!r}: expected seconds from 1 to 300")
    return seconds
