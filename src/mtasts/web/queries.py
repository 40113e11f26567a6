"""What the dashboard's pages read: reports, their failures, and watch's state, as plain rows.

Only reads (the pages work with a read-only database role); the numbers come from the
same queries as ``mtasts reports summary`` (:func:`mtasts.reports.analysis.summary`), so
the dashboard and the CLI never disagree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from mtasts.reports.analysis import SummaryRow, summary
from mtasts.reports.models import FailureRow, PolicyRow, Quarantined, RawReport
from mtasts.reports.models import Report as ReportRow
from mtasts.reports.store import ReportStore
from mtasts.watch.models import EventRow, RunRow

from .charts import DayBar


@dataclass(frozen=True, slots=True)
class Filters:
    since: dt.date
    until: dt.date
    domain: str | None = None
    sender: str | None = None
    result_type: str | None = None

    def keep(self, row: SummaryRow) -> bool:
        return (
            self.since <= row.day <= self.until
            and (self.sender is None or row.submitter == self.sender)
            and (self.result_type is None or row.failures.get(self.result_type, 0) > 0)
        )


def summary_rows(store: ReportStore, filters: Filters) -> list[SummaryRow]:
    return [r for r in summary(store, filters.domain, filters.since) if filters.keep(r)]


def day_bars(rows: list[SummaryRow]) -> list[DayBar]:
    days: dict[dt.date, list[Any]] = {}
    for row in rows:
        entry = days.setdefault(row.day, [0, defaultdict(int)])
        entry[0] += row.successful
        for kind, count in row.failures.items():
            entry[1][kind] += count
    return [DayBar(day, ok, dict(types)) for day, (ok, types) in sorted(days.items())]


@dataclass
class SenderRow:
    sender: str
    successful: int = 0
    failed: int = 0
    last_day: dt.date | None = None
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def sessions(self) -> int:
        return self.successful + self.failed

    @property
    def failure_rate(self) -> float:
        return self.failed / self.sessions if self.sessions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "sessions": self.sessions,
            "successful": self.successful,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 6),
            "last_report_day": self.last_day.isoformat() if self.last_day else None,
        }


def sender_rows(rows: list[SummaryRow]) -> list[SenderRow]:
    senders: dict[str, SenderRow] = {}
    for row in rows:
        entry = senders.setdefault(row.submitter, SenderRow(row.submitter))
        entry.successful += row.successful
        entry.failed += row.failed
        entry.last_day = max(entry.last_day or row.day, row.day)
        for kind, count in row.failures.items():
            entry.failures[kind] = entry.failures.get(kind, 0) + count
    return sorted(senders.values(), key=lambda s: (-s.sessions, s.sender))


@dataclass(frozen=True, slots=True)
class FailureGroupRow:
    sender: str
    result_type: str
    receiving_mx: str | None
    receiving_ip: str | None
    sessions: int
    first: dt.date
    last: dt.date
    reports: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "result_type": self.result_type,
            "receiving_mx": self.receiving_mx,
            "receiving_ip": self.receiving_ip,
            "sessions": self.sessions,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "reports": self.reports,
        }


def failure_groups(store: ReportStore, filters: Filters) -> list[FailureGroupRow]:
    """Failures by sender, result type, receiving MX and address: the rows to follow up."""
    key = (
        PolicyRow.submitter,
        FailureRow.result_type,
        FailureRow.receiving_mx,
        FailureRow.receiving_ip,
    )
    query = (
        select(
            *key,
            func.sum(FailureRow.sessions),
            func.min(PolicyRow.day),
            func.max(PolicyRow.day),
            func.count(func.distinct(PolicyRow.report_id)),
        )
        .join_from(FailureRow, PolicyRow, FailureRow.policy_id == PolicyRow.id)
        .where(*_policy_where(filters))
        .group_by(*key)
    )
    if filters.result_type:
        query = query.where(FailureRow.result_type == filters.result_type)
    with store.engine.connect() as connection:
        rows = [FailureGroupRow(*row) for row in connection.execute(query)]
    return sorted(rows, key=lambda r: (-r.sessions, r.sender, r.result_type))


def _policy_where(filters: Filters) -> list[Any]:
    where = [PolicyRow.day >= filters.since, PolicyRow.day <= filters.until]
    if filters.domain:
        where.append(PolicyRow.policy_domain == filters.domain)
    if filters.sender:
        where.append(PolicyRow.submitter == filters.sender)
    return where


def mx_matrix(groups: list[FailureGroupRow], senders: list[SenderRow]) -> dict[str, Any]:
    """Failed sessions per receiving MX (rows) and sender (columns), with each cell's share of
    that sender's sessions: TLS-RPT counts successes per policy, not per MX, so a per-MX
    success rate does not exist in the reports; the failure share is what they support."""
    totals = {s.sender: s.sessions for s in senders}
    cells: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for group in groups:
        cells[group.receiving_mx or "(not reported)"][group.sender] += group.sessions
    columns = sorted({s for row in cells.values() for s in row})
    return {
        "columns": columns,
        "rows": [
            {
                "mx": mx,
                "cells": [
                    (row.get(c, 0), row.get(c, 0) / totals[c] if totals.get(c) else 0.0)
                    for c in columns
                ],
            }
            for mx, row in sorted(cells.items())
        ],
    }


@dataclass(frozen=True, slots=True)
class ReportListRow:
    id: int
    submitter: str
    organization: str
    report_id: str
    start: dt.datetime
    successful: int
    failed: int
    channel: str
    dkim_domain: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "submitter": self.submitter,
            "organization": self.organization,
            "report_id": self.report_id,
            "start": self.start.isoformat(),
            "successful": self.successful,
            "failed": self.failed,
            "channel": self.channel,
            "dkim_domain": self.dkim_domain,
        }


def reports_list(
    store: ReportStore,
    filters: Filters,
    mx: str | None = None,
    ip: str | None = None,
    limit: int = 200,
) -> list[ReportListRow]:
    """Reports for the filters, newest first; with a result type, MX or address, only the
    reports whose failures carry it."""
    wanted = select(PolicyRow.report_id).where(*_policy_where(filters))
    if filters.result_type or mx or ip:
        wanted = wanted.join(FailureRow, FailureRow.policy_id == PolicyRow.id)
        if filters.result_type:
            wanted = wanted.where(FailureRow.result_type == filters.result_type)
        if mx:
            wanted = wanted.where(FailureRow.receiving_mx == mx)
        if ip:
            wanted = wanted.where(FailureRow.receiving_ip == ip)
    query = (
        select(
            ReportRow.id,
            ReportRow.submitter,
            ReportRow.organization,
            ReportRow.report_id,
            ReportRow.start,
            func.coalesce(func.sum(PolicyRow.successful), 0),
            func.coalesce(func.sum(PolicyRow.failed), 0),
            ReportRow.channel,
            ReportRow.dkim_domain,
        )
        .join_from(ReportRow, PolicyRow, PolicyRow.report_id == ReportRow.id)
        .where(ReportRow.id.in_(wanted))
        .group_by(ReportRow.id)
        .order_by(ReportRow.start.desc(), ReportRow.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as connection:
        return [ReportListRow(*row) for row in connection.execute(query)]


@dataclass(frozen=True, slots=True)
class ReportDetail:
    id: int
    submitter: str
    organization: str
    report_id: str
    contact: str
    start: dt.datetime
    end: dt.datetime
    channel: str
    dkim_domain: str | None
    sender_domain: str
    conflict: bool
    warnings: str
    ingested_at: dt.datetime
    source: str
    received_at: dt.datetime
    raw: bytes  # the report as received (gzip inflated)

    @property
    def pretty(self) -> str:
        try:
            return json.dumps(json.loads(self.raw), indent=2, ensure_ascii=False, sort_keys=False)
        except (ValueError, UnicodeDecodeError):
            return self.raw.decode("utf-8", "replace")


def report_detail(store: ReportStore, report_id: int) -> ReportDetail | None:
    query = (
        select(
            ReportRow.id,
            ReportRow.submitter,
            ReportRow.organization,
            ReportRow.report_id,
            ReportRow.contact,
            ReportRow.start,
            ReportRow.end,
            ReportRow.channel,
            ReportRow.dkim_domain,
            ReportRow.sender_domain,
            ReportRow.conflict,
            ReportRow.warnings,
            ReportRow.ingested_at,
            RawReport.source,
            RawReport.received_at,
            RawReport.data,
        )
        .join_from(ReportRow, RawReport, ReportRow.raw_id == RawReport.id)
        .where(ReportRow.id == report_id)
    )
    with store.engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    fields = dict(row._mapping)
    raw = gzip.decompress(fields.pop("data"))
    if raw[:2] == b"\x1f\x8b":  # a report sent gzip'd (RFC 8460 §5.3) is kept as sent
        with contextlib.suppress(OSError):
            raw = gzip.decompress(raw)
    return ReportDetail(**fields, raw=raw)  # the columns are named as the fields are


def policy_rows(store: ReportStore, report_id: int) -> list[dict[str, Any]]:
    with store.engine.connect() as connection:
        policies = connection.execute(
            select(
                PolicyRow.id,
                PolicyRow.policy_type,
                PolicyRow.policy_domain,
                PolicyRow.mx_host,
                PolicyRow.successful,
                PolicyRow.failed,
            ).where(PolicyRow.report_id == report_id)
        ).all()
        failures = connection.execute(
            select(
                FailureRow.policy_id,
                FailureRow.result_type,
                FailureRow.receiving_mx,
                FailureRow.receiving_ip,
                FailureRow.sending_ip,
                FailureRow.sessions,
                FailureRow.reason_code,
            ).where(FailureRow.policy_id.in_([p.id for p in policies]))
        ).all()
    return [
        {
            "type": p.policy_type,
            "domain": p.policy_domain,
            "mx_host": p.mx_host,
            "successful": p.successful,
            "failed": p.failed,
            "failures": [f for f in failures if f.policy_id == p.id],
        }
        for p in policies
    ]


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    id: int
    rule: str
    reason: str
    source: str
    at: dt.datetime


def quarantine_rows(store: ReportStore) -> list[QuarantineRow]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                Quarantined.id,
                Quarantined.rule,
                Quarantined.reason,
                Quarantined.source,
                Quarantined.at,
            ).order_by(Quarantined.id.desc())
        ).all()
    return [QuarantineRow(*row) for row in rows]


def data_version(store: ReportStore) -> tuple[object, ...]:
    """Changes whenever a report, a quarantined input or a watch pass is stored: what the
    overview's cache is keyed on."""
    with store.engine.connect() as connection:
        return (
            connection.execute(select(func.max(ReportRow.id))).scalar(),
            connection.execute(select(func.count(Quarantined.id))).scalar(),
            connection.execute(select(func.max(RunRow.id))).scalar(),
            connection.execute(select(func.max(EventRow.id))).scalar(),
        )
