"""Reporter storage: session tallies per UTC day, outgoing reports and their deliveries.

In the report store's database (SQLite or PostgreSQL, one Alembic history). Intake
adds a batch of sessions and the position its source was read to in one
transaction, so a restart neither loses nor counts a session twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as DbSession

from mtasts.tlsrpt.build import PolicyTally
from mtasts.tlsrpt.datagram import Session
from mtasts.tlsrpt.model import FailureDetail, PolicyType, ReportPolicy, _detail_dict

from .models import DeliveryRow, DetailRow, EndpointRow, IntakeRow, OutgoingReport, TallyRow


class ReportStatus(StrEnum):
    """Where an outgoing report stands."""

    PENDING = "pending"  # waiting for its first attempt or a retry
    SENT = "sent"  # one rua URI accepted it (RFC 8460 §3)
    FAILED = "failed"  # retried for retry_for (§5.5) and given up
    NO_RUA = "no-rua"  # the domain publishes no usable TLSRPT record now


class DeliveryStatus(StrEnum):
    """One URI's part in a report's delivery."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    FAILED = "failed"


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def policy_json(policy: ReportPolicy) -> str:
    return _canonical(
        {
            "policy-type": str(policy.policy_type),
            "policy-domain": policy.policy_domain,
            "policy-string": list(policy.policy_string) if policy.policy_string else None,
            "mx-host": list(policy.mx_host),
        }
    )


def _policy_from(text: str) -> ReportPolicy:
    raw = json.loads(text)
    strings = raw.get("policy-string")
    return ReportPolicy(
        PolicyType(raw["policy-type"]),
        raw["policy-domain"],
        tuple(strings) if strings else None,
        tuple(raw.get("mx-host") or ()),
    )


def _detail_from(text: str, count: int) -> FailureDetail:
    raw = json.loads(text)
    return FailureDetail(
        result_type=raw["result-type"],
        failed_session_count=count,
        sending_mta_ip=raw.get("sending-mta-ip"),
        receiving_mx_hostname=raw.get("receiving-mx-hostname"),
        receiving_mx_helo=raw.get("receiving-mx-helo"),
        receiving_ip=raw.get("receiving-ip"),
        additional_information=raw.get("additional-information"),
        failure_reason_code=raw.get("failure-reason-code"),
    )


@dataclass(frozen=True, slots=True)
class Pending:
    """One (day, policy domain, record) whose sessions have no report yet."""

    day: dt.date
    policy_domain: str
    record_key: str
    record: str
    sessions: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: int
    day: dt.date
    policy_domain: str
    report_id: str
    document: bytes
    status: str
    attempts: int
    deadline: dt.datetime
    last_error: str | None
    record: str


@dataclass(frozen=True, slots=True)
class DayStatus:
    day: str
    domains: int
    sessions: int
    failed_sessions: int
    pending: int
    sent: int
    failed: int
    no_rua: int
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "domains": self.domains,
            "sessions": self.sessions,
            "failed_sessions": self.failed_sessions,
            "reports": {
                "pending": self.pending,
                "sent": self.sent,
                "failed": self.failed,
                "no_rua": self.no_rua,
            },
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class Intake:
    source: str
    position: dict[str, Any]
    received: int
    sessions: int
    malformed: int
    last_error: str | None
    updated_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "received": self.received,
            "sessions": self.sessions,
            "malformed": self.malformed,
            "last_error": self.last_error,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


class ReporterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _upsert(
        self, table: Any, rows: list[dict[str, Any]], keys: list[str], add: list[str]
    ) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).values(rows)
        return statement.on_conflict_do_update(
            index_elements=keys,
            set_={c: getattr(table.c, c) + getattr(statement.excluded, c) for c in add},
        )

    def add_sessions(
        self,
        sessions: Sequence[tuple[dt.datetime, Session]],
        *,
        counts: Sequence[int] | None = None,
        source: str,
        position: dict[str, Any] | None = None,
        received: int = 0,
        malformed: int = 0,
        last_error: str | None = None,
        now: dt.datetime | None = None,
    ) -> None:
        """Count ``sessions`` (with when each ended; ``counts[i]`` times each, default once)
        and move ``source`` on, atomically."""
        tallies: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        details: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
        for index, (at, session) in enumerate(sessions):
            times = counts[index] if counts is not None else 1
            day = at.astimezone(dt.UTC).date().isoformat()
            record_key = _sha(session.record)
            for entry in session.policies:
                text = policy_json(entry.policy)
                key = (day, entry.policy.policy_domain, record_key, _sha(text))
                row = tallies.setdefault(
                    key,
                    {
                        "day": day,
                        "policy_domain": key[1],
                        "record_key": record_key,
                        "policy_key": key[3],
                        "record": session.record,
                        "policy": text,
                        "successful": 0,
                        "failed": 0,
                    },
                )
                row["failed" if entry.failed else "successful"] += times
                for detail in entry.details:
                    detail_text = _canonical(
                        {
                            k: v
                            for k, v in _detail_dict(detail).items()
                            if k != "failed-session-count"
                        }
                    )
                    dkey = (*key, _sha(detail_text))
                    drow = details.setdefault(
                        dkey,
                        {
                            "day": day,
                            "policy_domain": key[1],
                            "record_key": record_key,
                            "policy_key": key[3],
                            "detail_key": dkey[4],
                            "detail": detail_text,
                            "count": 0,
                        },
                    )
                    drow["count"] += detail.failed_session_count * times
        now = now or dt.datetime.now(dt.UTC)
        with DbSession(self.engine) as db, db.begin():
            table, dtable = TallyRow.__table__, DetailRow.__table__
            rows = list(tallies.values())
            for first in range(0, len(rows), 200):
                db.execute(
                    self._upsert(
                        table,
                        rows[first : first + 200],
                        ["day", "policy_domain", "record_key", "policy_key"],
                        ["successful", "failed"],
                    )
                )
            drows = list(details.values())
            for first in range(0, len(drows), 200):
                db.execute(
                    self._upsert(
                        dtable,
                        drows[first : first + 200],
                        ["day", "policy_domain", "record_key", "policy_key", "detail_key"],
                        ["count"],
                    )
                )
            itable = IntakeRow.__table__
            row = {
                "source": source,
                "position": _canonical(position or {}),
                "received": received,
                "sessions": sum(counts) if counts is not None else len(sessions),
                "malformed": malformed,
                "last_error": last_error,
                "updated_at": now,
            }
            dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
            statement = dialect.insert(itable).values(row)
            updates: dict[str, Any] = {
                c: getattr(itable.c, c) + getattr(statement.excluded, c)
                for c in ("received", "sessions", "malformed")
            }
            updates["updated_at"] = statement.excluded.updated_at
            if position is not None:
                updates["position"] = statement.excluded.position
            if last_error is not None:
                updates["last_error"] = statement.excluded.last_error
            db.execute(statement.on_conflict_do_update(index_elements=["source"], set_=updates))

    def intake(self) -> list[Intake]:
        with DbSession(self.engine) as db:
            rows = db.scalars(select(IntakeRow).order_by(IntakeRow.source)).all()
            return [
                Intake(
                    r.source,
                    json.loads(r.position or "{}"),
                    r.received,
                    r.sessions,
                    r.malformed,
                    r.last_error,
                    _utc(r.updated_at),
                )
                for r in rows
            ]

    def position(self, source: str) -> dict[str, Any]:
        with DbSession(self.engine) as db:
            text = db.scalar(select(IntakeRow.position).where(IntakeRow.source == source))
        return dict(json.loads(text)) if text else {}

    def unreported(self, before: dt.date, day: dt.date | None = None) -> list[Pending]:
        """(day, domain, record) groups of days before ``before`` (or exactly ``day``) that
        have sessions and no report yet."""
        with DbSession(self.engine) as db:
            reported = select(OutgoingReport.id).where(
                and_(
                    OutgoingReport.day == TallyRow.day,
                    OutgoingReport.policy_domain == TallyRow.policy_domain,
                    OutgoingReport.record_key == TallyRow.record_key,
                )
            )
            query = (
                select(
                    TallyRow.day,
                    TallyRow.policy_domain,
                    TallyRow.record_key,
                    func.max(TallyRow.record),
                    func.sum(TallyRow.successful + TallyRow.failed),
                )
                .where(~reported.exists())
                .group_by(TallyRow.day, TallyRow.policy_domain, TallyRow.record_key)
                .order_by(TallyRow.day, TallyRow.policy_domain)
            )
            query = query.where(
                TallyRow.day == day.isoformat() if day else TallyRow.day < before.isoformat()
            )
            return [
                Pending(dt.date.fromisoformat(d), domain, key, record or "", int(total or 0))
                for d, domain, key, record, total in db.execute(query)
            ]

    def tallies(self, pending: Pending) -> list[PolicyTally]:
        where = (
            TallyRow.day == pending.day.isoformat(),
            TallyRow.policy_domain == pending.policy_domain,
            TallyRow.record_key == pending.record_key,
        )
        with DbSession(self.engine) as db:
            rows = db.execute(
                select(
                    TallyRow.policy_key, TallyRow.policy, TallyRow.successful, TallyRow.failed
                ).where(*where)
            ).all()
            found: dict[str, list[FailureDetail]] = {}
            for policy_key, text, count in db.execute(
                select(DetailRow.policy_key, DetailRow.detail, DetailRow.count).where(
                    DetailRow.day == pending.day.isoformat(),
                    DetailRow.policy_domain == pending.policy_domain,
                    DetailRow.record_key == pending.record_key,
                )
            ):
                found.setdefault(policy_key, []).append(_detail_from(text, int(count)))
        return [
            PolicyTally(_policy_from(text), int(ok), int(failed), tuple(found.get(key, ())))
            for key, text, ok, failed in rows
        ]

    def day_tallies(self, day: dt.date) -> dict[tuple[str, str], list[PolicyTally]]:
        """Every (policy domain, record key)'s tallies of ``day`` in two queries, for building
        a whole day's reports at once (one query pair per report cost 100,000 of them)."""
        details: dict[tuple[str, str, str], list[FailureDetail]] = {}
        out: dict[tuple[str, str], list[PolicyTally]] = {}
        with DbSession(self.engine) as db:
            for domain, record_key, policy_key, text, count in db.execute(
                select(
                    DetailRow.policy_domain,
                    DetailRow.record_key,
                    DetailRow.policy_key,
                    DetailRow.detail,
                    DetailRow.count,
                ).where(DetailRow.day == day.isoformat())
            ):
                details.setdefault((domain, record_key, policy_key), []).append(
                    _detail_from(text, int(count))
                )
            for domain, record_key, policy_key, text, ok, failed in db.execute(
                select(
                    TallyRow.policy_domain,
                    TallyRow.record_key,
                    TallyRow.policy_key,
                    TallyRow.policy,
                    TallyRow.successful,
                    TallyRow.failed,
                ).where(TallyRow.day == day.isoformat())
            ):
                out.setdefault((domain, record_key), []).append(
                    PolicyTally(
                        _policy_from(text),
                        int(ok),
                        int(failed),
                        tuple(details.get((domain, record_key, policy_key), ())),
                    )
                )
        return out

    def create_reports(
        self,
        items: Sequence[tuple[Pending, str, bytes, dt.datetime]],
        *,
        now: dt.datetime,
        retry_for: dt.timedelta,
    ) -> int:
        """Store many new reports (pending, report-id, gzip, first attempt) in one transaction;
        a report-id already stored is left as it is. Returns how many were added."""
        added = 0
        with DbSession(self.engine) as db, db.begin():
            ids = [rid for _, rid, _, _ in items]
            known: set[str] = set()
            for first in range(0, len(ids), 500):
                known.update(
                    db.scalars(
                        select(OutgoingReport.report_id).where(
                            OutgoingReport.report_id.in_(ids[first : first + 500])
                        )
                    )
                )
            for pending, rid, document, first_attempt in items:
                if rid in known:
                    continue
                known.add(rid)
                db.add(
                    OutgoingReport(
                        day=pending.day.isoformat(),
                        policy_domain=pending.policy_domain,
                        record_key=pending.record_key,
                        report_id=rid,
                        document=document,
                        created_at=now,
                        deadline=first_attempt + retry_for,
                        status=ReportStatus.PENDING,
                        next_attempt=first_attempt,
                        attempts=0,
                        sessions=pending.sessions,
                    )
                )
                added += 1
        return added

    def create_report(
        self,
        pending: Pending,
        report_id: str,
        document: bytes,
        *,
        first_attempt: dt.datetime,
        now: dt.datetime,
        retry_for: dt.timedelta,
    ) -> Outgoing:
        """One report (the one already stored under ``report_id``, if any)."""
        self.create_reports(
            [(pending, report_id, document, first_attempt)], now=now, retry_for=retry_for
        )
        with DbSession(self.engine) as db:
            row = db.scalar(select(OutgoingReport).where(OutgoingReport.report_id == report_id))
            assert row is not None
            return self._outgoing(row, pending.record)

    @staticmethod
    def _outgoing(row: OutgoingReport, record: str) -> Outgoing:
        return Outgoing(
            row.id,
            dt.date.fromisoformat(row.day),
            row.policy_domain,
            row.report_id,
            row.document,
            row.status,
            row.attempts,
            _utc(row.deadline) or row.deadline,
            row.last_error,
            record,
        )

    def due(self, now: dt.datetime, day: dt.date | None = None) -> list[Outgoing]:
        with DbSession(self.engine) as db:
            query = (
                select(OutgoingReport, TallyRow.record)
                .join(
                    TallyRow,
                    and_(
                        TallyRow.day == OutgoingReport.day,
                        TallyRow.policy_domain == OutgoingReport.policy_domain,
                        TallyRow.record_key == OutgoingReport.record_key,
                    ),
                )
                .where(OutgoingReport.status == ReportStatus.PENDING)
            )
            query = query.where(
                OutgoingReport.day == day.isoformat() if day else OutgoingReport.next_attempt <= now
            )
            seen: dict[int, Outgoing] = {}
            for row, record in db.execute(query.order_by(OutgoingReport.id)):
                seen.setdefault(row.id, self._outgoing(row, record))
            return list(seen.values())

    def accepted_uris(self, report: int) -> set[str]:
        with DbSession(self.engine) as db:
            return set(
                db.scalars(
                    select(DeliveryRow.uri).where(
                        DeliveryRow.report == report, DeliveryRow.status == DeliveryStatus.ACCEPTED
                    )
                )
            )

    def suppressed(self, uris: Iterable[str], now: dt.datetime) -> set[str]:
        with DbSession(self.engine) as db:
            rows = db.execute(
                select(EndpointRow.uri, EndpointRow.suppressed_until).where(
                    EndpointRow.uri.in_(list(uris))
                )
            ).all()
        return {uri for uri, until in rows if until is not None and (_utc(until) or now) > now}

    def record_attempt(
        self,
        report: Outgoing,
        results: dict[str, str | None],
        *,
        now: dt.datetime,
        next_attempt: dt.datetime,
        suppress_after: int,
        suppress_for: dt.timedelta,
        final_status: str | None = None,
        error: str | None = None,
        ours: frozenset[str] = frozenset(),
    ) -> str:
        """Store one round's outcome per URI (None: accepted, else the error); returns the
        report's status afterwards. A failure of a URI in ``ours`` was our side's (the relay
        down, sendmail missing): the delivery counts it, the endpoint's suppression does not."""
        with DbSession(self.engine) as db, db.begin():
            row = db.get(OutgoingReport, report.id)
            assert row is not None
            for uri, failure in results.items():
                delivery = db.get(DeliveryRow, (report.id, uri))
                if delivery is None:
                    delivery = DeliveryRow(
                        report=report.id, uri=uri, status=DeliveryStatus.PENDING, attempts=0
                    )
                    db.add(delivery)
                delivery.attempts += 1
                endpoint = db.get(EndpointRow, uri)
                if endpoint is None:
                    endpoint = EndpointRow(uri=uri, failures=0)
                    db.add(endpoint)
                if failure is None:
                    delivery.status, delivery.accepted_at, delivery.last_error = (
                        DeliveryStatus.ACCEPTED,
                        now,
                        None,
                    )
                    endpoint.failures, endpoint.last_success = 0, now
                    endpoint.suppressed_until = None
                else:
                    delivery.status, delivery.last_error = DeliveryStatus.FAILED, failure
                    if uri not in ours:
                        endpoint.failures += 1
                        endpoint.last_error = failure
                        if endpoint.failures >= suppress_after:
                            endpoint.suppressed_until = now + suppress_for
            row.attempts += 1
            errors = [e for e in results.values() if e] + ([error] if error else [])
            accepted = any(e is None for e in results.values()) or bool(
                db.scalar(
                    select(func.count()).where(
                        DeliveryRow.report == report.id,
                        DeliveryRow.status == DeliveryStatus.ACCEPTED,
                    )
                )
            )
            row.last_error = "; ".join(errors)[:2000] if errors else None
            if final_status is not None:
                row.status = final_status
            elif accepted:
                # §3: delivered once one endpoint accepted it; others are not retried forever.
                row.status, row.sent_at = ReportStatus.SENT, row.sent_at or now
            elif next_attempt > (_utc(row.deadline) or next_attempt):
                row.status = ReportStatus.FAILED  # §5.5: retried for 24 hours, then given up
            else:
                row.next_attempt = next_attempt
            return row.status

    def set_status(self, report: Outgoing, status: str, error: str | None) -> None:
        with DbSession(self.engine) as db, db.begin():
            db.execute(
                update(OutgoingReport)
                .where(OutgoingReport.id == report.id)
                .values(status=status, last_error=error)
            )

    def status(self, since: dt.date) -> list[DayStatus]:
        with DbSession(self.engine) as db:
            sessions = {
                d: (int(n or 0), int(s or 0), int(f or 0))
                for d, n, s, f in db.execute(
                    select(
                        TallyRow.day,
                        func.count(func.distinct(TallyRow.policy_domain)),
                        func.sum(TallyRow.successful),
                        func.sum(TallyRow.failed),
                    )
                    .where(TallyRow.day >= since.isoformat())
                    .group_by(TallyRow.day)
                )
            }
            reports: dict[str, dict[str, int]] = {}
            errors: dict[str, str | None] = {}
            for d, status, count in db.execute(
                select(OutgoingReport.day, OutgoingReport.status, func.count())
                .where(OutgoingReport.day >= since.isoformat())
                .group_by(OutgoingReport.day, OutgoingReport.status)
            ):
                reports.setdefault(d, {})[status] = int(count)
            for d, error in db.execute(
                select(OutgoingReport.day, OutgoingReport.last_error)
                .where(
                    OutgoingReport.day >= since.isoformat(), OutgoingReport.last_error.is_not(None)
                )
                .order_by(OutgoingReport.id)
            ):
                errors[d] = error
        days = sorted(set(sessions) | set(reports), reverse=True)
        out = []
        for d in days:
            domains, ok, failed = sessions.get(d, (0, 0, 0))
            counts = reports.get(d, {})
            out.append(
                DayStatus(
                    d,
                    domains,
                    ok + failed,
                    failed,
                    counts.get(ReportStatus.PENDING, 0),
                    counts.get(ReportStatus.SENT, 0),
                    counts.get(ReportStatus.FAILED, 0),
                    counts.get(ReportStatus.NO_RUA, 0),
                    errors.get(d),
                )
            )
        return out

    def endpoints(self) -> list[dict[str, Any]]:
        with DbSession(self.engine) as db:
            return [
                {
                    "uri": r.uri,
                    "failures_in_a_row": r.failures,
                    "suppressed_until": _iso(r.suppressed_until),
                    "last_error": r.last_error,
                    "last_success": _iso(r.last_success),
                }
                for r in db.scalars(select(EndpointRow).order_by(EndpointRow.uri))
            ]

    def prune(self, before: dt.date) -> int:
        """Drop tallies and finished reports of days before ``before``."""
        with DbSession(self.engine) as db, db.begin():
            result = db.execute(delete(TallyRow).where(TallyRow.day < before.isoformat()))
            gone = getattr(result, "rowcount", 0)
            db.execute(delete(DetailRow).where(DetailRow.day < before.isoformat()))
            old = select(OutgoingReport.id).where(
                OutgoingReport.day < before.isoformat(),
                OutgoingReport.status != ReportStatus.PENDING,
            )
            db.execute(delete(DeliveryRow).where(DeliveryRow.report.in_(old)))
            db.execute(
                delete(OutgoingReport).where(
                    OutgoingReport.day < before.isoformat(),
                    OutgoingReport.status != ReportStatus.PENDING,
                )
            )
            return int(gone or 0)


def _iso(value: dt.datetime | None) -> str | None:
    value = _utc(value)
    return value.isoformat() if value else None
