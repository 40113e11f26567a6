"""RFC 8461 §5.1 cache rules, one row per rule."""

from __future__ import annotations

import pytest

from mtasts.sts import Mode, MxPattern, Policy
from mtasts.sts.cache import (
    FETCH_RETRY_AFTER,
    Action,
    CachedPolicy,
    FetchFailure,
    after_failed_fetch,
    decide,
    enforced,
)

DAY = 86400
POLICY = Policy(Mode.ENFORCE, 7 * DAY, (MxPattern("mx.example.com"),))
FRESH = CachedPolicy("example.com", POLICY, "id1", fetched_at=1000.0)
NOW = 1000.0 + DAY / 2

ROWS = [
    # (record id, cached, failure, now, expected action) -- what §5.1 says
    ("id1", None, None, NOW, Action.FETCH),  # nothing cached: fetch
    ("id1", FRESH, None, NOW, Action.USE_CACHED),  # same id, unexpired: no fetch
    ("id2", FRESH, None, NOW, Action.FETCH),  # changed id: refetch
    (None, FRESH, None, NOW, Action.USE_CACHED),  # record gone or DNS failed: cached applies
    (None, None, None, NOW, Action.NO_POLICY),  # nothing at all
    ("id1", FRESH, None, 1000.0 + 7 * DAY, Action.FETCH),  # expired: refetch even with the same id
    (None, FRESH, None, 1000.0 + 7 * DAY, Action.NO_POLICY),  # expired and no record: no policy
    (
        "id2",
        FRESH,
        FetchFailure("id2", NOW - 10, "HTTP 500"),
        NOW,
        Action.USE_CACHED,
    ),  # backoff, cached
    (
        "id2",
        None,
        FetchFailure("id2", NOW - 10, "HTTP 500"),
        NOW,
        Action.NO_POLICY,
    ),  # backoff, nothing
    (
        "id2",
        FRESH,
        FetchFailure("id2", NOW - FETCH_RETRY_AFTER, "x"),
        NOW,
        Action.FETCH,
    ),  # backoff over
    ("id3", FRESH, FetchFailure("id2", NOW - 10, "x"), NOW, Action.FETCH),  # another id: no backoff
]


@pytest.mark.parametrize(("record_id", "cached", "failure", "now", "action"), ROWS)
def test_decide(
    record_id: str | None,
    cached: CachedPolicy | None,
    failure: FetchFailure | None,
    now: float,
    action: Action,
) -> None:
    assert decide(record_id, cached, failure, now).action is action


def test_failed_fetch_keeps_an_unexpired_cached_policy() -> None:
    assert after_failed_fetch(FRESH, NOW, "timeout").action is Action.USE_CACHED
    assert after_failed_fetch(FRESH, 1000.0 + 8 * DAY, "timeout").action is Action.NO_POLICY
    assert after_failed_fetch(None, NOW, "timeout").action is Action.NO_POLICY


def test_refresh_is_daily_and_before_half_the_lifetime() -> None:
    assert not FRESH.refresh_due(1000.0 + DAY - 1)
    assert FRESH.refresh_due(1000.0 + DAY)
    short = CachedPolicy("example.com", Policy(Mode.ENFORCE, 3600, POLICY.mx), "x", 0.0)
    assert short.refresh_due(1800.0)
    assert not short.refresh_due(1799.0)


def test_mode_none_is_cached_but_not_enforced() -> None:
    none = CachedPolicy("example.com", Policy(Mode.NONE, DAY), "id9", 0.0)
    assert not enforced(none)
    assert enforced(FRESH)
    assert not enforced(None)
