"""The policy cache rules of RFC 8461 §5.1, as pure decisions a sender's cache follows.

A sender looks up ``_mta-sts.<domain>`` before each delivery (or uses a cached
answer), fetches the policy only when the record's id differs from the cached
policy's, keeps using a cached unexpired policy when DNS or HTTPS fails, and
refreshes cached policies proactively so a policy never lapses for a domain
that still sends it. Clocks are plain seconds (epoch) passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .policy import Mode, Policy

# After a failed fetch, the same id is not refetched within this many seconds (DESIGN.md:
# postfix-mta-sts-resolver refetches on every request, hammering a broken policy host).
FETCH_RETRY_AFTER = 300
# RFC 8461 §5.1: refresh cached policies periodically, e.g. daily.
REFRESH_INTERVAL = 86400


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A policy as fetched for one domain, with its id and fetch time."""

    domain: str
    policy: Policy
    policy_id: str
    fetched_at: float

    @property
    def expires_at(self) -> float:
        # RFC 8461 §3.2: max_age counts from when the policy was fetched.
        return self.fetched_at + self.policy.max_age

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def refresh_due(self, now: float) -> bool:
        """Daily, and in any case before half the lifetime has passed (so it never lapses)."""
        return now - self.fetched_at >= min(REFRESH_INTERVAL, self.policy.max_age / 2)


@dataclass(frozen=True, slots=True)
class FetchFailure:
    policy_id: str
    at: float
    reason: str


class Action(StrEnum):
    USE_CACHED = "use-cached"
    FETCH = "fetch"
    NO_POLICY = "no-policy"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    cached: CachedPolicy | None = None


def decide(
    record_id: str | None,
    cached: CachedPolicy | None,
    failure: FetchFailure | None,
    now: float,
    *,
    record_problem: str = "no valid _mta-sts record",
) -> Decision:
    """What to do for one lookup, given the record's id (None: absent, invalid or DNS failed)."""
    live = cached if cached is not None and not cached.expired(now) else None
    if record_id is None:
        if live is not None:
            # RFC 8461 §5.1: a cached, unexpired policy applies when discovery fails.
            return Decision(
                Action.USE_CACHED, f"{record_problem}; the cached policy still applies", live
            )
        return Decision(Action.NO_POLICY, record_problem)
    if live is not None and live.policy_id == record_id:
        return Decision(Action.USE_CACHED, "the record's id matches the cached policy", live)
    if (
        failure is not None
        and failure.policy_id == record_id
        and now - failure.at < FETCH_RETRY_AFTER
    ):
        wait = int(FETCH_RETRY_AFTER - (now - failure.at))
        reason = f"fetching id {record_id} failed {int(now - failure.at)} s ago ({failure.reason}); retry in {wait} s"
        return Decision(Action.USE_CACHED if live else Action.NO_POLICY, reason, live)
    changed = "a new id" if live is not None else "no cached policy"
    return Decision(Action.FETCH, f"{changed}: fetch id {record_id}", live)


def after_failed_fetch(cached: CachedPolicy | None, now: float, reason: str) -> Decision:
    """RFC 8461 §5.1: when the fetch fails, a cached unexpired policy still applies."""
    if cached is not None and not cached.expired(now):
        return Decision(
            Action.USE_CACHED,
            f"the fetch failed ({reason}); the cached policy still applies",
            cached,
        )
    return Decision(Action.NO_POLICY, f"the fetch failed ({reason}) and nothing is cached")


def enforced(cached: CachedPolicy | None) -> bool:
    """Mode none withdraws enforcement (RFC 8461 §5): it is cached, but nothing is enforced."""
    return cached is not None and cached.policy.mode is not Mode.NONE
