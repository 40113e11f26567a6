"""What the stored reports say: daily summaries, and whether ``enforce`` is safe (the readiness verdict).

Under ``enforce`` a sender defers mail whenever the TLS session to an MX fails
validation (RFC 8461 §5). So the sessions TLS-RPT reports as failed with a
negotiation result type (RFC 8460 §4.3.1) are mail that enforce would have
held back. Policy failures (§4.3.2.2: the sender could not fetch or validate
the policy) mean the sender applied no policy at all, so enforce would not
change them; DANE failures belong to DANE.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from mtasts.tlsrpt import ResultType

from .models import FailureRow, PolicyRow
from .store import ReportStore

WOULD_DEFER = {
    ResultType.STARTTLS_NOT_SUPPORTED, ResultType.CERTIFICATE_HOST_MISMATCH, ResultType.CERTIFICATE_EXPIRED,
    ResultType.CERTIFICATE_NOT_TRUSTED, ResultType.VALIDATION_FAILURE,
}  # fmt: skip
LARGEST_SENDERS = ("google", "microsoft", "yahoo")


@dataclass
class SummaryRow:
    day: dt.date
    submitter: str
    domain: str
    policy_type: str
    successful: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "submitter": self.submitter, "domain": self.domain,
                "policy_type": self.policy_type, "successful": self.successful, "failed": self.failed,
                "failures": dict(sorted(self.failures.items()))}  # fmt: skip


def _where(domain: str | None, since: dt.date | None) -> list[ColumnElement[bool]]:
    """One domain's rows use the (policy_domain, day) index as one range scan."""
    conditions = []
    if domain:
        conditions.append(PolicyRow.policy_domain == domain.lower().rstrip("."))
    if since:
        conditions.append(PolicyRow.day >= since)
    return conditions


def summary(
    store: ReportStore, domain: str | None = None, since: dt.date | None = None
) -> list[SummaryRow]:
    """Sessions per day, sender, policy domain and type; summed by the database, not in Python."""
    key = (PolicyRow.day, PolicyRow.submitter, PolicyRow.policy_domain, PolicyRow.policy_type)
    totals = (
        select(*key, func.sum(PolicyRow.successful), func.sum(PolicyRow.failed))
        .where(*_where(domain, since))
        .group_by(*key)
    )
    failures = (
        select(*key, FailureRow.result_type, func.sum(FailureRow.sessions))
        .join_from(FailureRow, PolicyRow, FailureRow.policy_id == PolicyRow.id)
        .where(*_where(domain, since))
        .group_by(*key, FailureRow.result_type)
    )
    rows: dict[tuple[dt.date, str, str, str], SummaryRow] = {}
    with store.engine.connect() as connection:
        for day, submitter, name, kind, successful, failed in connection.execute(totals):
            rows[(day, submitter, name, kind)] = SummaryRow(
                day, submitter, name, kind, int(successful), int(failed)
            )
        for day, submitter, name, kind, result_type, sessions in connection.execute(failures):
            rows[(day, submitter, name, kind)].failures[result_type] = int(sessions)
    return sorted(rows.values(), key=lambda r: (r.day, r.domain, r.submitter))


@dataclass(frozen=True)
class MxRow:
    """Failed sessions per day, sender, receiving MX and address, and result type."""

    day: dt.date
    submitter: str
    domain: str
    receiving_mx: str | None
    receiving_ip: str | None
    result_type: str
    sessions: int

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "submitter": self.submitter, "domain": self.domain,
                "receiving_mx": self.receiving_mx, "receiving_ip": self.receiving_ip,
                "result_type": self.result_type, "sessions": self.sessions}  # fmt: skip


def summary_by_mx(
    store: ReportStore, domain: str | None = None, since: dt.date | None = None
) -> list[MxRow]:
    key = (PolicyRow.day, PolicyRow.submitter, PolicyRow.policy_domain, FailureRow.receiving_mx,
           FailureRow.receiving_ip, FailureRow.result_type)  # fmt: skip
    query = (
        select(*key, func.sum(FailureRow.sessions))
        .join_from(FailureRow, PolicyRow, FailureRow.policy_id == PolicyRow.id)
        .where(*_where(domain, since))
        .group_by(*key)
    )
    with store.engine.connect() as connection:
        rows = [
            MxRow(day, submitter, name, mx, ip, result_type, int(sessions))
            for day, submitter, name, mx, ip, result_type, sessions in connection.execute(query)
        ]
    return sorted(rows, key=lambda r: (r.day, r.domain, -r.sessions))


def _failures(session: Session, policy_ids: list[int]) -> dict[int, list[FailureRow]]:
    out: dict[int, list[FailureRow]] = defaultdict(list)
    for start in range(0, len(policy_ids), 500):
        chunk = policy_ids[start : start + 500]
        for failure in session.scalars(select(FailureRow).where(FailureRow.policy_id.in_(chunk))):
            out[failure.policy_id].append(failure)
    return out


def _rows(
    store: ReportStore, domain: str | None, since: dt.date | None
) -> tuple[list[PolicyRow], dict[int, list[FailureRow]]]:
    """Per-policy rows (of one domain, since a day, when given) and their failures.

    With a domain this is one range scan of the (policy_domain, day) index.
    """
    query = select(PolicyRow).where(*_where(domain, since))
    with Session(store.engine) as session:
        policies = list(session.scalars(query))
        return policies, _failures(session, [p.id for p in policies])


@dataclass
class FailureGroup:
    submitter: str
    result_type: str
    receiving_mx: str | None
    receiving_ip: str | None
    sessions: int = 0
    first: dt.date | None = None
    last: dt.date | None = None

    @property
    def explained_by(self) -> str:
        # One vocabulary: a result type is also the name of the check finding that explains it.
        return f"mtasts check: {self.result_type}"

    def to_dict(self) -> dict[str, Any]:
        return {"submitter": self.submitter, "result_type": self.result_type, "receiving_mx": self.receiving_mx,
                "receiving_ip": self.receiving_ip, "sessions": self.sessions,
                "first": self.first.isoformat() if self.first else None,
                "last": self.last.isoformat() if self.last else None, "explained_by": self.explained_by}  # fmt: skip


@dataclass
class Readiness:
    domain: str
    days: int
    verdict: str  # READY | NOT READY | UNKNOWN
    reason: str
    sessions: int = 0
    senders: list[str] = field(default_factory=list)
    would_defer: list[FailureGroup] = field(default_factory=list)
    unaffected: list[FailureGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "days": self.days, "verdict": self.verdict, "reason": self.reason,
                "sessions": self.sessions, "senders": self.senders,
                "would_defer": [g.to_dict() for g in self.would_defer],
                "unaffected": [g.to_dict() for g in self.unaffected]}  # fmt: skip


def readiness(
    store: ReportStore, domain: str, days: int = 14, today: dt.date | None = None
) -> Readiness:
    """Would anything have been blocked under enforce over the last ``days`` days?"""
    domain = domain.lower().rstrip(".")
    since = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=days)
    policies, failures = _rows(store, domain, since)
    result = Readiness(domain, days, "UNKNOWN", "")
    result.sessions = sum(p.successful + p.failed for p in policies)
    result.senders = sorted({p.submitter for p in policies})
    groups: dict[tuple[str, str, str | None, str | None], FailureGroup] = {}
    for policy in policies:
        for failure in failures.get(policy.id, []):
            key = (
                policy.submitter,
                failure.result_type,
                failure.receiving_mx,
                failure.receiving_ip,
            )
            group = groups.setdefault(key, FailureGroup(*key))
            group.sessions += failure.sessions
            group.first = min(group.first or policy.day, policy.day)
            group.last = max(group.last or policy.day, policy.day)
    for group in sorted(groups.values(), key=lambda g: -g.sessions):
        deferred = group.result_type in {r.value for r in WOULD_DEFER}
        (result.would_defer if deferred else result.unaffected).append(group)
    if not policies:
        result.reason = f"no TLS-RPT reports for {domain} in the last {days} days"
    elif not any(big in s for s in result.senders for big in LARGEST_SENDERS):
        result.reason = f"no report from the largest senders ({', '.join(LARGEST_SENDERS)}) in {days} days: too little data"
    elif result.would_defer:
        blocked = sum(g.sessions for g in result.would_defer)
        result.verdict = "NOT READY"
        result.reason = f"enforce would have deferred {blocked} of {result.sessions} sessions"
    else:
        result.verdict = "READY"
        result.reason = f"{result.sessions} sessions from {len(result.senders)} senders, none that enforce would defer"
    return result


def clean_window_days(
    store: ReportStore, domain: str, max_days: int = 90, today: dt.date | None = None
) -> int | None:
    """Consecutive recent days with reports and nothing enforce would defer; None with no reports."""
    end = today or dt.datetime.now(dt.UTC).date()
    since = end - dt.timedelta(days=max_days)
    policies, failures = _rows(store, domain, since)
    if not policies:
        return None
    bad_days = {
        p.day
        for p in policies
        if any(f.result_type in {r.value for r in WOULD_DEFER} for f in failures.get(p.id, []))
    }
    reported = {p.day for p in policies}
    days = 0
    day = end - dt.timedelta(days=1)
    while day >= since and day in reported and day not in bad_days:
        days += 1
        day -= dt.timedelta(days=1)
    return days
