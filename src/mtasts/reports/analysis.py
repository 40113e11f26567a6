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
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, func, select

from mtasts.sts.domain import normalise_host
from mtasts.tlsrpt import ResultType

from .models import FailureRow, PolicyRow
from .models import Report as ReportRow
from .provenance import Channel, is_sender
from .store import ReportStore
from .verdict import Verdict

WOULD_DEFER = {
    ResultType.STARTTLS_NOT_SUPPORTED,
    ResultType.CERTIFICATE_HOST_MISMATCH,
    ResultType.CERTIFICATE_EXPIRED,
    ResultType.CERTIFICATE_NOT_TRUSTED,
    ResultType.VALIDATION_FAILURE,
}
# Readiness waits for these senders' reports, matched on the domain that vouches for a
# report (its verified DKIM signer, or its claimed domain on a trusted channel), never on
# the organisation name a report chooses for itself (security review #3).
LARGE_SENDERS = ("google.com", "microsoft.com", "yahoo.com")


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
        return {
            "day": self.day.isoformat(),
            "submitter": self.submitter,
            "domain": self.domain,
            "policy_type": self.policy_type,
            "successful": self.successful,
            "failed": self.failed,
            "failures": dict(sorted(self.failures.items())),
        }


def _where(domain: str | None, since: dt.date | None) -> list[ColumnElement[bool]]:
    """One domain's rows use the (policy_domain, day) index as one range scan."""
    conditions = []
    if domain:
        conditions.append(PolicyRow.policy_domain == normalise_host(domain))
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
class DomainRow:
    """One domain over a period, beside the period before it: the line to watch over weeks."""

    domain: str
    sessions: int
    failed: int
    top_failure: str | None
    senders: int
    previous_sessions: int
    previous_failed: int

    @property
    def failure_rate(self) -> float:
        return self.failed / self.sessions if self.sessions else 0.0

    @property
    def trend(self) -> str:
        """The failure rate against the previous period of the same length."""
        if not self.previous_sessions:
            return "new"
        before = self.previous_failed / self.previous_sessions
        change = self.failure_rate - before
        if abs(change) < 0.0005:  # under 0.05 points: the same
            return "same"
        return f"{'+' if change > 0 else '-'}{abs(change) * 100:.1f} pts"

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "sessions": self.sessions,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 6),
            "top_failure": self.top_failure,
            "senders": self.senders,
            "previous_sessions": self.previous_sessions,
            "previous_failed": self.previous_failed,
            "trend": self.trend,
        }


def summary_by_domain(
    store: ReportStore, since: dt.date, today: dt.date | None = None
) -> list[DomainRow]:
    """Per domain since ``since``, and the same for the period of equal length before it."""
    end = today or dt.datetime.now(dt.UTC).date()
    before = since - (end - since)
    current = summary(store, None, since)
    previous = [r for r in summary(store, None, before) if r.day < since]
    rows: dict[str, DomainRow] = {}
    failures: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    senders: dict[str, set[str]] = defaultdict(set)
    for r in current:
        old = rows.get(r.domain) or DomainRow(r.domain, 0, 0, None, 0, 0, 0)
        rows[r.domain] = DomainRow(
            r.domain, old.sessions + r.successful + r.failed, old.failed + r.failed, None, 0, 0, 0
        )
        senders[r.domain].add(r.submitter)
        for kind, count in r.failures.items():
            failures[r.domain][kind] += count
    totals: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for r in previous:
        sessions, failed = totals[r.domain]
        totals[r.domain] = (sessions + r.successful + r.failed, failed + r.failed)
    out = []
    for name, row in sorted(rows.items()):
        kinds = failures.get(name) or {}
        top = max(sorted(kinds), key=lambda k: kinds[k]) if kinds else None
        out.append(
            DomainRow(name, row.sessions, row.failed, top, len(senders[name]), *totals[name])
        )
    return out


def domains_reported(store: ReportStore, since: dt.date) -> list[str]:
    """Every policy domain with a report since ``since``."""
    query = select(PolicyRow.policy_domain).where(PolicyRow.day >= since).distinct()
    with store.engine.connect() as connection:
        return sorted(connection.execute(query).scalars())


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
        return {
            "day": self.day.isoformat(),
            "submitter": self.submitter,
            "domain": self.domain,
            "receiving_mx": self.receiving_mx,
            "receiving_ip": self.receiving_ip,
            "result_type": self.result_type,
            "sessions": self.sessions,
        }


def summary_by_mx(
    store: ReportStore, domain: str | None = None, since: dt.date | None = None
) -> list[MxRow]:
    key = (
        PolicyRow.day,
        PolicyRow.submitter,
        PolicyRow.policy_domain,
        FailureRow.receiving_mx,
        FailureRow.receiving_ip,
        FailureRow.result_type,
    )
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


class _Policy(NamedTuple):
    """The columns of a policy_results row that readiness reads (no ORM object per row)."""

    id: int
    report_id: int
    submitter: str
    day: dt.date
    successful: int
    failed: int
    policy_domain: str


class _Failure(NamedTuple):
    policy_id: int
    result_type: str
    receiving_mx: str | None
    receiving_ip: str | None
    sessions: int


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one stored report came from, and who vouches for it."""

    channel: str
    dkim_domain: str | None
    sender_domain: str
    conflict: bool

    def vouched_by(self, trusted: frozenset[Channel]) -> str | None:
        if self.dkim_domain:
            return self.dkim_domain
        return self.sender_domain if self.channel in trusted else None


def _rows(
    store: ReportStore, domain: str | None, since: dt.date | None
) -> tuple[list[_Policy], dict[int, list[_Failure]]]:
    """Per-policy rows (of one domain, since a day, when given) and their failures.

    With a domain each is one range scan of the (policy_domain, day) index; plain column
    tuples, not ORM objects, because a busy domain has thousands of rows a fortnight.
    """
    where = _where(domain, since)
    policies = select(
        PolicyRow.id,
        PolicyRow.report_id,
        PolicyRow.submitter,
        PolicyRow.day,
        PolicyRow.successful,
        PolicyRow.failed,
        PolicyRow.policy_domain,
    ).where(*where)
    failures = (
        select(
            FailureRow.policy_id,
            FailureRow.result_type,
            FailureRow.receiving_mx,
            FailureRow.receiving_ip,
            FailureRow.sessions,
        )
        .join_from(FailureRow, PolicyRow, FailureRow.policy_id == PolicyRow.id)
        .where(*where)
    )
    by_policy: dict[int, list[_Failure]] = defaultdict(list)
    with store.engine.connect() as connection:
        rows = [_Policy(*row) for row in connection.execute(policies)]
        for row in connection.execute(failures):
            by_policy[row[0]].append(_Failure(*row))
    return rows, by_policy


def _origins(store: ReportStore, domain: str | None, since: dt.date) -> dict[int, Origin]:
    """Where each report with a policy for ``domain`` (any, with None) since ``since`` came
    from: one join."""
    query = (
        select(
            ReportRow.id,
            ReportRow.channel,
            ReportRow.dkim_domain,
            ReportRow.sender_domain,
            ReportRow.conflict,
        )
        .join_from(ReportRow, PolicyRow, PolicyRow.report_id == ReportRow.id)
        .where(*_where(domain, since))
        .distinct()
    )
    with store.engine.connect() as connection:
        return {
            row_id: Origin(channel, dkim_domain, sender_domain, bool(conflict))
            for row_id, channel, dkim_domain, sender_domain, conflict in connection.execute(query)
        }


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
        return {
            "submitter": self.submitter,
            "result_type": self.result_type,
            "receiving_mx": self.receiving_mx,
            "receiving_ip": self.receiving_ip,
            "sessions": self.sessions,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "explained_by": self.explained_by,
        }


@dataclass
class Readiness:
    domain: str
    days: int
    verdict: Verdict
    reason: str
    sessions: int = 0
    failed: int = 0  # failed sessions of any result type, deferred under enforce or not
    senders: list[str] = field(default_factory=list)
    vouched: list[str] = field(default_factory=list)  # domains that vouch for a report
    conflicts: int = 0  # reports whose submitter and id another content also holds
    would_defer: list[FailureGroup] = field(default_factory=list)
    unaffected: list[FailureGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "days": self.days,
            "verdict": str(self.verdict),
            "reason": self.reason,
            "sessions": self.sessions,
            "failed": self.failed,
            "senders": self.senders,
            "vouched": self.vouched,
            "conflicts": self.conflicts,
            "would_defer": [g.to_dict() for g in self.would_defer],
            "unaffected": [g.to_dict() for g in self.unaffected],
        }


def readiness(
    store: ReportStore,
    domain: str,
    days: int = 14,
    today: dt.date | None = None,
    large_senders: tuple[str, ...] = LARGE_SENDERS,
    trusted: frozenset[Channel] = frozenset(),
    require_all: bool = False,
) -> Readiness:
    """Would anything have been blocked under enforce over the last ``days`` days?

    A definite failure wins: any session enforce would have deferred makes it NOT READY,
    whoever reported it. READY needs a report from each of ``large_senders`` that is
    authenticated (a verified DKIM signature) or came through a ``trusted`` channel (from
    each when ``require_all``, else from at least one), and no conflicting reports: anyone
    can send a report claiming to be Google's.
    """
    domain = normalise_host(domain)
    since = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=days)
    policies, failures = _rows(store, domain, since)
    origins = _origins(store, domain, since)
    return _judge_readiness(
        domain, days, policies, failures, origins, large_senders, trusted, require_all
    )


def readiness_many(
    store: ReportStore,
    days: int = 14,
    today: dt.date | None = None,
    large_senders: tuple[str, ...] = LARGE_SENDERS,
    trusted: frozenset[Channel] = frozenset(),
    require_all: bool = False,
) -> dict[str, Readiness]:
    """:func:`readiness` for every domain with reports in the window, read in three queries
    for all of them (the dashboard's overview), judged by the same rules."""
    since = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=days)
    policies, failures = _rows(store, None, since)
    origins = _origins(store, None, since)
    by_domain: dict[str, list[_Policy]] = defaultdict(list)
    for policy in policies:
        by_domain[policy.policy_domain].append(policy)
    return {
        domain: _judge_readiness(
            domain, days, rows, failures, origins, large_senders, trusted, require_all
        )
        for domain, rows in sorted(by_domain.items())
    }


def _judge_readiness(
    domain: str,
    days: int,
    policies: list[_Policy],
    failures: dict[int, list[_Failure]],
    origins: dict[int, Origin],
    large_senders: tuple[str, ...],
    trusted: frozenset[Channel],
    require_all: bool,
) -> Readiness:
    """The verdict from one domain's rows; pure. ``failures`` and ``origins`` may hold other
    domains' rows too: only this domain's policies are looked up in them."""
    origins = {p.report_id: origins[p.report_id] for p in policies if p.report_id in origins}
    result = Readiness(domain, days, Verdict.UNKNOWN, "")
    result.sessions = sum(p.successful + p.failed for p in policies)
    result.failed = sum(p.failed for p in policies)
    result.senders = sorted({p.submitter for p in policies})
    result.vouched = sorted(
        {v for o in origins.values() if (v := o.vouched_by(trusted)) is not None}
    )
    result.conflicts = sum(o.conflict for o in origins.values())
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
    missing = [s for s in large_senders if not any(is_sender(v, s) for v in result.vouched)]
    if not require_all and len(missing) < len(large_senders):
        missing = []  # one of them is enough
    claimed = [s for s in missing if any(is_sender(o.sender_domain, s) for o in origins.values())]
    if not policies:
        result.reason = f"no TLS-RPT reports for {domain} in the last {days} days"
    elif result.would_defer:
        blocked = sum(g.sessions for g in result.would_defer)
        result.verdict = Verdict.NOT_READY
        result.reason = f"enforce would have deferred {blocked} of {result.sessions} sessions"
    elif result.conflicts:
        result.reason = (
            f"{result.conflicts} reports share a submitter and report-id with other content"
            " (a forged report?): see `mtasts reports quarantine`"
        )
    elif claimed:
        result.reason = (
            f"the reports claiming to be from {', '.join(claimed)} are not authenticated (no"
            " verified DKIM signature; an HTTPS POST carries none): readiness counts them only"
            " from a channel you trust (--trust)"
        )
    elif missing:
        result.reason = f"no report from the largest senders ({', '.join(missing)}) in {days} days: too little data"
    else:
        result.verdict = Verdict.READY
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


def sender_names(store: ReportStore) -> dict[str, str]:
    """Each submitter key (lower case, how reports are grouped) with the organization name
    as its latest report wrote it ("Microsoft Corporation"), for display (walkthrough #50)."""
    latest = (
        select(ReportRow.submitter, func.max(ReportRow.id).label("last"))
        .group_by(ReportRow.submitter)
        .subquery()
    )
    query = select(ReportRow.submitter, ReportRow.organization).join(
        latest, ReportRow.id == latest.c.last
    )
    with store.engine.connect() as connection:
        return {key: name or key for key, name in connection.execute(query)}
