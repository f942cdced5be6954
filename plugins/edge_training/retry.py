"""When a failed request is worth trying again, and how long to wait first: the package's one backoff.

Every wait between tries (the AML trigger's error backoff, the Stack Hub partition wait in the worker
and in the triggerer) computes its delay with :func:`backoff_delay`, so they all cap, jitter and
honour a server's Retry-After the same way. Pure, so it is tested alone.
"""

from __future__ import annotations

import email.utils
import time
from datetime import timezone

#: HTTP statuses a retry may cure, for every service this package calls (AML, Stack Hub blob storage).
#: Anything else (400, 401, 403, 404, 409...) is a real error.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

#: A Retry-After is obeyed up to this many times the backoff's cap, so a mis-set header cannot park a
#: wait for hours (the deadline of the wait still cuts it).
RETRY_AFTER_CAP_FACTOR = 5.0


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    rand: float,
    jitter: float = 0.5,
    retry_after_s: float | None = None,
) -> float:
    """Seconds to wait before the next try, after ``attempt`` earlier waits (0 for the first).

    The ceiling doubles from ``base_s`` per attempt and stops at ``cap_s``; up to ``jitter`` (a
    fraction) of it is taken off at random (``rand`` is uniform in [0, 1)), so clients that failed
    together do not retry together, and the delay never exceeds the cap. A server's Retry-After is
    a floor: the wait is never shorter than what the server asked for (bounded, see
    ``RETRY_AFTER_CAP_FACTOR``).
    """
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 32))
    delay = ceiling * (1.0 - jitter * (1.0 - rand))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap_s * RETRY_AFTER_CAP_FACTOR))
    return max(0.0, delay)


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
