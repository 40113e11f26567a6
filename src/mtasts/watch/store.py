"""Watch storage: domains and their state, compact observations, events and the outbox.

It lives in the report store's database (SQLite or PostgreSQL, one Alembic history).
A run's results for one domain are written in one transaction — the observation,
the new state, the events and their outbox rows — so a crash leaves either all of
it or none, and an event is durable before any channel is tried.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Delete, Engine, delete, func, insert, select, update
from sqlalchemy.orm import Session

from mtasts.check.facts import DomainFacts
from mtasts.check.findings import Severity
from mtasts.check.judge import DomainCheck
from mtasts.reports.models import FailureRow, PolicyRow

from .changes import DomainState
from .events import Event, EventCode, EventStatus
from .models import ChannelRow, EventRow, Observation, OutboxRow, RunRow, WatchedDomain
from .report_changes import DayStat

_CHUNK = 500  # names per IN list


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _timeless(value: Any) -> Any:
    """The facts without what changes on every run (timings, when), for the digest."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in ("seconds", "observed_at")}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def facts_digest(facts: DomainFacts) -> str:
    canonical = json.dumps(_timeless(facts.to_dict()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Watched:
    domain: str
    role: str
    label: str
    state: DomainState
    last_run: dt.datetime | None
    next_due: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ObservationRow:
    id: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    runs: int
    verdict: str
    mode: str
    findings: list[list[str]]
    facts: DomainFacts

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_seen": self.first_seen.isoformat(),
            "unchanged_until": self.last_seen.isoformat(),
            "runs": self.runs,
            "verdict": self.verdict,
            "mode": self.mode,
            "findings": [{"code": c, "severity": s, "subject": x} for c, s, x in self.findings],
        }


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    name: str
    last_success: dt.datetime | None
    last_error_at: dt.datetime | None
    last_error: str | None
    sent: int
    failed: int
    pending: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "last_success": _iso(self.last_success),
            "last_error_at": _iso(self.last_error_at),
            "last_error": self.last_error,
            "sent": self.sent,
            "failed": self.failed,
            "pending": self.pending,
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True, slots=True)
class Recorded:
    """One domain's result of a pass, as :meth:`WatchStore.record_many` stores it."""

    check: DomainCheck
    state: DomainState
    events: tuple[Event, ...]
    routes: dict[int, list[str]]
    next_due: dt.datetime


@dataclass(frozen=True, slots=True)
class Pending:
    outbox_id: int
    attempts: int
    event: Event


class WatchStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- domains --------------------------------------------------------------------------

    def sync_domains(self, wanted: Sequence[tuple[str, str, str]]) -> None:
        """Make the watched set ``wanted`` ((domain, role, label)); state of kept ones stays."""
        with Session(self.engine) as session, session.begin():
            rows = {r.domain: r for r in session.scalars(select(WatchedDomain))}
            names = {d for d, _, _ in wanted}
            for domain, role, label in wanted:
                row = rows.get(domain)
                if row is None:
                    session.add(WatchedDomain(domain=domain, role=role, label=label, state="{}"))
                elif (row.role, row.label) != (role, label):
                    row.role, row.label = role, label
            for domain, row in rows.items():
                if domain not in names:
                    session.delete(row)  # its observations and events stay, for history

    def watched(self) -> list[Watched]:
        with Session(self.engine) as session:
            return [
                Watched(
                    r.domain,
                    r.role,
                    r.label,
                    DomainState.from_dict(json.loads(r.state or "{}")),
                    _utc(r.last_run),
                    _utc(r.next_due),
                )
                for r in session.scalars(select(WatchedDomain).order_by(WatchedDomain.domain))
            ]

    # -- one domain's run -----------------------------------------------------------------

    def record(
        self,
        check: DomainCheck,
        state: DomainState,
        events: Sequence[Event],
        routes: dict[int, list[str]],
        next_due: dt.datetime,
    ) -> None:
        """Store the observation (or extend the unchanged one), the state, the events and
        an outbox row per (event, channel) in ``routes`` (by the event's index)."""
        self.record_many([Recorded(check, state, tuple(events), routes, next_due)])

    def record_many(self, items: Sequence[Recorded]) -> None:
        """:meth:`record` for a whole pass in one transaction: the pass is stored whole or
        not at all, and a thousand domains cost one commit, not a thousand."""
        if not items:
            return
        with Session(self.engine) as session, session.begin():
            latest: dict[str, Observation] = {}
            names = [item.check.domain for item in items]
            for first in range(0, len(names), _CHUNK):
                newest = (
                    select(func.max(Observation.id))
                    .where(Observation.domain.in_(names[first : first + _CHUNK]))
                    .group_by(Observation.domain)
                )
                for row in session.scalars(select(Observation).where(Observation.id.in_(newest))):
                    latest[row.domain] = row
            for item in items:
                self._observation(session, item.check, latest.get(item.check.domain))
            session.execute(
                update(WatchedDomain),
                [
                    {
                        "domain": item.check.domain,
                        "state": json.dumps(item.state.to_dict(), separators=(",", ":")),
                        "last_run": item.check.facts.observed_at,
                        "next_due": item.next_due,
                    }
                    for item in items
                ],
            )
            for item in items:
                self._add_events(session, item.events, item.routes, item.check.facts.observed_at)

    def _observation(
        self, session: Session, check: DomainCheck, latest: Observation | None
    ) -> None:
        facts = check.facts
        digest = facts_digest(facts)
        seen = facts.observed_at
        if latest is not None and latest.digest == digest:
            latest.last_seen = seen  # unchanged since latest.first_seen
            latest.runs += 1
            return
        findings = [[str(f.code), str(f.severity), f.subject] for f in check.findings]
        session.add(
            Observation(
                domain=check.domain,
                first_seen=seen,
                last_seen=seen,
                runs=1,
                digest=digest,
                facts=gzip.compress(json.dumps(facts.to_dict(), separators=(",", ":")).encode(), 6),
                findings=json.dumps(findings, separators=(",", ":")),
                verdict=str(check.verdict),
                mode=check.mode,
            )
        )

    def add_events(
        self, events: Sequence[Event], routes: dict[int, list[str]], now: dt.datetime
    ) -> None:
        with Session(self.engine) as session, session.begin():
            self._add_events(session, events, routes, now)

    def save_state(self, domain: str, state: DomainState) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(WatchedDomain)
                .where(WatchedDomain.domain == domain)
                .values(state=json.dumps(state.to_dict(), separators=(",", ":")))
            )

    def _add_events(
        self,
        session: Session,
        events: Sequence[Event],
        routes: dict[int, list[str]],
        now: dt.datetime,
    ) -> None:
        rows = []
        for event in events:
            row = EventRow(
                at=event.at,
                domain=event.domain,
                code=str(event.code),
                status=str(event.status),
                severity=str(event.severity),
                subject=event.subject,
                message=event.message,
                before=event.before,
                after=event.after,
                horizon=event.horizon,
            )
            session.add(row)
            rows.append(row)
        if not any(routes.values()):
            return
        session.flush()  # the events' ids, for their outbox rows
        for index, row in enumerate(rows):
            for channel in routes.get(index, []):
                session.add(
                    OutboxRow(event_id=row.id, channel=channel, attempts=0, next_attempt=now)
                )

    def record_run(
        self, started: dt.datetime, finished: dt.datetime, domains: int, events: int, errors: int
    ) -> None:
        with Session(self.engine) as session, session.begin():
            session.add(
                RunRow(
                    started=started,
                    finished=finished,
                    domains=domains,
                    events=events,
                    errors=errors,
                )
            )

    def last_run(self) -> dt.datetime | None:
        with Session(self.engine) as session:
            return _utc(session.scalar(select(func.max(RunRow.finished))))

    # -- reading ----------------------------------------------------------------------------

    def events(
        self,
        since: dt.datetime | None = None,
        domain: str | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        query = select(EventRow).order_by(EventRow.at, EventRow.id)
        if since is not None:
            query = query.where(EventRow.at >= since)
        if domain is not None:
            query = query.where(EventRow.domain == domain)
        with Session(self.engine) as session:
            rows = list(session.scalars(query.limit(limit)))
        return [_event(r) for r in rows]

    def observations(self, domain: str, limit: int = 200) -> list[ObservationRow]:
        with Session(self.engine) as session:
            rows = list(
                session.scalars(
                    select(Observation)
                    .where(Observation.domain == domain)
                    .order_by(Observation.first_seen.desc(), Observation.id.desc())
                    .limit(limit)
                )
            )
        result = []
        for r in reversed(rows):
            facts = DomainFacts.from_dict(json.loads(gzip.decompress(r.facts)))
            first, last = _utc(r.first_seen), _utc(r.last_seen)
            assert first is not None
            assert last is not None
            result.append(
                ObservationRow(
                    r.id, first, last, r.runs, r.verdict, r.mode, json.loads(r.findings), facts
                )
            )
        return result

    def storage(self) -> dict[str, int]:
        """Rows and stored bytes of observations (for `watch status --json` and the bench)."""
        with Session(self.engine) as session:
            count, size = session.execute(
                select(
                    func.count(Observation.id),
                    func.coalesce(func.sum(func.length(Observation.facts)), 0),
                )
            ).one()
            runs = session.scalar(select(func.coalesce(func.sum(Observation.runs), 0)))
        return {"observations": int(count), "facts_bytes": int(size), "runs": int(runs or 0)}

    def day_stats(self, domain: str, since: dt.date) -> list[DayStat]:
        """Per (day, sender) sessions for ``domain`` from the report store, failures by type."""
        with Session(self.engine) as session:
            policies = session.execute(
                select(
                    PolicyRow.id,
                    PolicyRow.day,
                    PolicyRow.submitter,
                    PolicyRow.successful,
                    PolicyRow.failed,
                ).where(PolicyRow.policy_domain == domain, PolicyRow.day >= since)
            ).all()
            ids = [p.id for p in policies]
            failures: dict[int, list[tuple[str, int]]] = {}
            for first in range(0, len(ids), 500):
                chunk = ids[first : first + 500]
                for policy_id, result_type, sessions in session.execute(
                    select(FailureRow.policy_id, FailureRow.result_type, FailureRow.sessions).where(
                        FailureRow.policy_id.in_(chunk)
                    )
                ):
                    failures.setdefault(policy_id, []).append((result_type, sessions))
        merged: dict[tuple[dt.date, str], list[Any]] = {}
        for p in policies:
            entry = merged.setdefault((p.day, p.submitter), [0, 0, {}])
            entry[0] += p.successful
            entry[1] += p.failed
            for result_type, sessions in failures.get(p.id, []):
                entry[2][result_type] = entry[2].get(result_type, 0) + sessions
        return [
            DayStat(day, sender, ok, bad, tuple(sorted(types.items())))
            for (day, sender), (ok, bad, types) in sorted(merged.items())
        ]

    # -- outbox -----------------------------------------------------------------------------

    def pending(self, channel: str, now: dt.datetime) -> list[Pending]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(OutboxRow, EventRow)
                .join(EventRow, EventRow.id == OutboxRow.event_id)
                .where(
                    OutboxRow.channel == channel,
                    OutboxRow.sent_at.is_(None),
                    OutboxRow.next_attempt <= now,
                )
                .order_by(OutboxRow.id)
                .limit(500)
            ).all()
        return [Pending(o.id, o.attempts, _event(e)) for o, e in rows]

    def delivered(self, channel: str, ids: Iterable[int], now: dt.datetime) -> None:
        ids = list(ids)
        with Session(self.engine) as session, session.begin():
            session.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(sent_at=now))
            row = self._channel(session, channel)
            row.last_success = now
            row.sent += len(ids)

    def failed(
        self,
        channel: str,
        pending: Sequence[Pending],
        error: str,
        now: dt.datetime,
        backoff: dt.timedelta,
    ) -> None:
        with Session(self.engine) as session, session.begin():
            for item in pending:
                session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id == item.outbox_id)
                    .values(
                        attempts=item.attempts + 1, next_attempt=now + backoff, last_error=error
                    )
                )
            row = self._channel(session, channel)
            row.last_error_at = now
            row.last_error = error
            row.failed += 1

    def _channel(self, session: Session, name: str) -> ChannelRow:
        row = session.get(ChannelRow, name)
        if row is None:
            row = ChannelRow(name=name, sent=0, failed=0)
            session.add(row)
        return row

    def channels(self, names: Sequence[str]) -> list[ChannelHealth]:
        with Session(self.engine) as session:
            rows = {r.name: r for r in session.scalars(select(ChannelRow))}
            pending = dict(
                session.execute(
                    select(OutboxRow.channel, func.count(OutboxRow.id))
                    .where(OutboxRow.sent_at.is_(None))
                    .group_by(OutboxRow.channel)
                ).all()
            )
        result = []
        for name in sorted(set(names) | set(rows) | set(pending)):
            row = rows.get(name)
            result.append(
                ChannelHealth(
                    name,
                    _utc(row.last_success) if row else None,
                    _utc(row.last_error_at) if row else None,
                    row.last_error if row else None,
                    row.sent if row else 0,
                    row.failed if row else 0,
                    int(pending.get(name, 0)),
                )
            )
        return result

    # -- retention --------------------------------------------------------------------------

    def prune(self, before: dt.datetime) -> dict[str, int]:
        """Forget observations last seen and events (delivered) before ``before``; the latest
        observation of each domain stays, whatever its age."""
        with Session(self.engine) as session, session.begin():
            latest = select(func.max(Observation.id)).group_by(Observation.domain)
            observations = _count(
                session,
                delete(Observation).where(
                    Observation.last_seen < before, Observation.id.not_in(latest)
                ),
            )
            undelivered = select(OutboxRow.event_id).where(OutboxRow.sent_at.is_(None))
            old_events = select(EventRow.id).where(
                EventRow.at < before, EventRow.id.not_in(undelivered)
            )
            outbox = _count(session, delete(OutboxRow).where(OutboxRow.event_id.in_(old_events)))
            events = _count(
                session,
                delete(EventRow).where(EventRow.at < before, EventRow.id.not_in(undelivered)),
            )
            runs = _count(session, delete(RunRow).where(RunRow.finished < before))
        return {"observations": observations, "events": events, "outbox": outbox, "runs": runs}


def _count(session: Session, statement: Delete) -> int:
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


def _event(row: EventRow) -> Event:
    at = _utc(row.at)
    assert at is not None
    return Event(
        code=EventCode(row.code),
        domain=row.domain,
        subject=row.subject,
        severity=Severity(row.severity),
        at=at,
        message=row.message,
        status=EventStatus(row.status),
        before=row.before,
        after=row.after,
        horizon=_utc(row.horizon),
    )


def insert_many(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Bulk observations for the bench (a simulated year), one executemany."""
    with engine.begin() as connection:
        connection.execute(insert(Observation), rows)
