"""Where each configured domain stands on the road to enforce, and what to do next.

The article's workflow takes weeks: publish in ``testing`` with a short ``max_age``,
read the TLS-RPT reports until they are clean, switch to ``enforce``, then ramp
``max_age`` (RFC 8461 §5 lets senders cache a policy that long, so a long one only
once it is proven). This module judges one domain from facts gathered elsewhere (the
configuration, the state file's history, what DNS and the policy host serve, the
reports) with the clock as a parameter: no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from mtasts.check.checker import DomainCheck
from mtasts.check.findings import CheckCode
from mtasts.reports.verdict import Verdict
from mtasts.sts import Mode, Policy, parse_policy
from mtasts.tlsrpt import ResultType

from .config import DomainConfig
from .rollout import Retirement
from .state import Change

# What says why no policy is published: the record's findings, then the policy fetch's.
_STS_CODES = frozenset(
    {
        CheckCode.STS_NOT_PUBLISHED,
        CheckCode.STS_RECORD_MULTIPLE,
        CheckCode.STS_RECORD_INVALID,
        ResultType.STS_POLICY_FETCH_ERROR,
        ResultType.STS_POLICY_INVALID,
        ResultType.STS_WEBPKI_INVALID,
    }
)

CLEAN_DAYS_FOR_ENFORCE = 14  # the article: two weeks of clean reports before enforce
RAMP = (86400, 604800, 1209600, 31557600)  # one day, a week, two weeks, a year (the RFC's most)
EXPIRY_WARNING_DAYS = 21


@dataclass(frozen=True, slots=True)
class Published:
    """What the world sees now: the record's id, the served policy, the host's certificate."""

    record_id: str | None = None
    policy: Policy | None = None
    problem: str | None = None  # why nothing (or something unusable) is served
    certificate_expires: dt.datetime | None = None


@dataclass
class Status:
    domain: str
    mode: str
    max_age: int
    configured_id: str | None
    published: str  # "id X" | "not published yet" | "drift: DNS serves id X"
    certificate_expires: dt.datetime | None
    mode_since: dt.datetime | None
    clean_days: int | None
    readiness: Verdict
    readiness_reason: str
    next_step: str
    next_date: dt.date | None = None
    records_removable: dt.datetime | None = None
    problems: list[str] = field(default_factory=list)
    in_sync: bool = False  # DNS and the policy host serve what mtasts.toml says

    def to_dict(self) -> dict[str, Any]:
        def day(value: dt.datetime | dt.date | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "domain": self.domain,
            "mode": self.mode,
            "max_age": self.max_age,
            "configured_id": self.configured_id,
            "published": self.published,
            "certificate_expires": day(self.certificate_expires),
            "mode_since": day(self.mode_since),
            "clean_days": self.clean_days,
            "readiness": str(self.readiness),
            "readiness_reason": self.readiness_reason,
            "next_step": self.next_step,
            "next_date": day(self.next_date),
            "records_removable": day(self.records_removable),
            "problems": self.problems,
            "in_sync": self.in_sync,
        }


def published_from(check: DomainCheck) -> Published:
    """The parts of a live check that say what is published."""
    problem = None
    if check.sts_record is None:
        problem = next((f.message for f in check.findings if f.code in _STS_CODES), None)
    elif check.policy is None and check.fetch is not None:
        problem = check.fetch.error or "the policy host serves no usable policy"
    leaf = check.fetch.leaf if check.fetch is not None else None
    return Published(
        check.sts_record.id if check.sts_record else None,
        check.policy,
        problem,
        leaf.not_after if leaf is not None else None,
    )


def mode_since(history: list[Change], mode: Mode) -> dt.datetime | None:
    """When the current stretch of ``mode`` began: the oldest change of the latest run of it."""
    since = None
    for change in reversed(history):
        if not change.policy_id:
            continue  # `init`: nothing was published, so no sender saw that mode yet
        try:
            changed_to = parse_policy(change.new_policy).mode
        except ValueError:
            break
        if changed_to is not mode:
            break
        since = dt.datetime.fromisoformat(change.when)
    return since


def judge(
    domain: DomainConfig,
    configured_id: str | None,
    history: list[Change],
    published: Published,
    readiness: tuple[Verdict, str],
    clean_days: int | None,
    retired: tuple[dt.datetime, int] | None,
    now: dt.datetime,
) -> Status:
    """One domain's status and its next step, from facts; ``now`` is the clock."""
    status = Status(
        domain.name,
        str(domain.mode),
        domain.max_age,
        configured_id,
        "",
        published.certificate_expires,
        mode_since(history, domain.mode),
        clean_days,
        readiness[0],
        readiness[1],
        "",
    )
    if published.problem:
        status.problems.append(published.problem)
    if published.certificate_expires is not None:
        left = (published.certificate_expires - now).days
        if left < EXPIRY_WARNING_DAYS:
            status.problems.append(
                f"the policy host's certificate expires in {left} days: renew it"
                " (an expired one is sts-webpki-invalid for every sender)"
            )
    in_sync = status.in_sync = _publication(status, domain, configured_id, published)
    if retired is not None:
        retirement = Retirement(*retired)
        status.records_removable = retirement.removable_at
        status.next_step = retirement.status(now)
        status.next_date = retirement.removable_at.date()
        return status
    if not in_sync:
        status.next_step = (
            f"publish: serve the policy of mtasts.toml and its id (mtasts records {domain.name},"
            " or --publish SERVER)"
        )
        return status
    if domain.mode is Mode.TESTING:
        _next_from_testing(status, domain, now)
    elif domain.mode is Mode.ENFORCE:
        _next_in_enforce(status, domain, now)
    else:
        status.next_step = f"mode none: finish withdrawing with mtasts retire {domain.name}"
    return status


def _publication(
    status: Status, domain: DomainConfig, configured_id: str | None, published: Published
) -> bool:
    if configured_id is None:
        status.published = "not published yet"
        return False
    if published.record_id is None:
        status.published = "not published yet (DNS serves no _mta-sts record)"
        return False
    if published.record_id != configured_id:
        status.published = f"drift: DNS serves id {published.record_id}"
        return False
    if published.policy is not None and published.policy != domain.policy:
        status.published = f"drift: the policy host serves another policy (id {configured_id})"
        return False
    status.published = f"id {configured_id}"
    return published.policy is not None


def _next_from_testing(status: Status, domain: DomainConfig, now: dt.datetime) -> None:
    clean = status.clean_days or 0
    if status.readiness == Verdict.NOT_READY:
        status.next_step = (
            "fix what the reports show enforce would defer (mtasts reports readiness"
            f" {domain.name}), then wait for {CLEAN_DAYS_FOR_ENFORCE} clean days"
        )
        return
    if clean >= CLEAN_DAYS_FOR_ENFORCE and status.readiness == Verdict.READY:
        status.next_step = f"enforce possible now: mtasts mode {domain.name} enforce"
        status.next_date = now.date()
        return
    when = now.date() + dt.timedelta(days=CLEAN_DAYS_FOR_ENFORCE - clean)
    status.next_date = when
    status.next_step = (
        f"enforce possible after {when}: {CLEAN_DAYS_FOR_ENFORCE} clean days"
        f" ({clean} so far{'' if status.readiness == 'READY' else '; ' + status.readiness_reason})"
    )


def _next_in_enforce(status: Status, domain: DomainConfig, now: dt.datetime) -> None:
    higher = [step for step in RAMP if step > domain.max_age]
    if not higher:
        status.next_step = "done: enforce with a long max_age; keep reading the reports"
        return
    target = higher[0]
    since = status.mode_since or now
    # Each step waits as long as the current lifetime: a mistake found by then is cached no longer.
    when = max(now, since + dt.timedelta(seconds=domain.max_age)).date()
    status.next_date = when
    status.next_step = (
        f"raise max_age to {target} after {when}, if the reports stay clean:"
        f" mtasts max-age {domain.name} {target}"
    )


__all__ = ["Published", "Status", "judge", "mode_since", "published_from"]
