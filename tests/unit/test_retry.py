"""The package's one backoff (edge_training.retry): bounds, caps, jitter, Retry-After, transient statuses."""

from __future__ import annotations

import random

import pytest

from edge_training.hooks.azureml_polling import PollPolicy
from edge_training.hooks.stackhub_blob import PARTITION_POLL_JITTER, partition_poll_delay
from edge_training.retry import (
    RETRY_AFTER_CAP_FACTOR,
    TRANSIENT_HTTP_STATUSES,
    backoff_delay,
    parse_retry_after,
)


@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.5, 1.0])
def test_each_delay_lies_below_its_doubling_ceiling_by_at_most_the_jitter(jitter):
    rng = random.Random(3)
    for attempt in range(20):
        ceiling = min(60.0, 2.0 * 2**attempt)
        for _ in range(50):
            delay = backoff_delay(attempt, base_s=2.0, cap_s=60.0, rand=rng.random(), jitter=jitter)
            assert ceiling * (1 - jitter) <= delay <= ceiling


def test_the_extremes_of_rand_give_the_ends_of_the_range():
    assert backoff_delay(2, base_s=1.0, cap_s=100.0, rand=0.0, jitter=0.5) == 2.0
    assert backoff_delay(2, base_s=1.0, cap_s=100.0, rand=0.999999, jitter=0.5) == pytest.approx(4.0)


def test_delays_grow_monotonically_and_never_pass_the_cap():
    for rand in (0.0, 0.5, 0.999):
        delays = [backoff_delay(a, base_s=0.5, cap_s=30.0, rand=rand) for a in range(100)]
        assert delays == sorted(delays)
        assert max(delays) <= 30.0 and delays[-1] >= 15.0  # the cap is reached, and held
    # A huge attempt count neither overflows nor escapes the cap.
    assert backoff_delay(10_000, base_s=1.0, cap_s=7.0, rand=0.999) <= 7.0


def test_retry_after_is_a_floor_and_is_bounded():
    assert backoff_delay(0, base_s=2.0, cap_s=60.0, rand=0.0, retry_after_s=30.0) == 30.0
    # A Retry-After shorter than the backoff does not shorten it.
    assert backoff_delay(5, base_s=2.0, cap_s=60.0, rand=0.999, retry_after_s=1.0) == pytest.approx(60.0, rel=1e-3)
    # A silly one is obeyed only up to RETRY_AFTER_CAP_FACTOR times the cap.
    assert backoff_delay(0, base_s=2.0, cap_s=60.0, rand=0.0, retry_after_s=1e6) == 60.0 * RETRY_AFTER_CAP_FACTOR


def test_the_aml_error_backoff_is_this_backoff_from_its_own_start_and_cap():
    policy = PollPolicy()
    for n in range(1, 12):
        for rand in (0.0, 0.3, 0.999):
            assert policy.error_delay(n, rand, 45.0) == backoff_delay(
                n - 1, base_s=policy.error_initial_s, cap_s=policy.error_max_s, rand=rand, retry_after_s=45.0
            )


def test_the_partition_wait_backs_off_within_its_jitter_and_honours_retry_after():
    for attempt in range(12):
        ceiling = min(300.0, 30.0 * 2**attempt)
        delay = partition_poll_delay(attempt, 30.0, 300.0)
        assert ceiling * (1 - PARTITION_POLL_JITTER) <= delay <= ceiling
    assert partition_poll_delay(0, 30.0, 300.0, retry_after_s=120.0) == 120.0


def test_transient_statuses_are_the_ones_a_retry_can_cure():
    assert {429, 503, 500, 502, 504, 408} == TRANSIENT_HTTP_STATUSES
    assert not {400, 401, 403, 404, 409} & TRANSIENT_HTTP_STATUSES


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.5", 0.5), (None, None), ("", None), ("soon", None), ("-4", 0.0)],
)
def test_parse_retry_after_seconds(header, expected):
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
