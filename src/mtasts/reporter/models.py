"""The reporter's tables, in the report store's schema (one Alembic history; migration 0004).

Sessions are never stored one by one: a day's sessions are counters per (day, policy
domain, TLSRPT record, policy) and per identical failure detail, so a busy MTA costs
one row per recipient domain and day, not one per message.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mtasts.reports.models import Base


class TallyRow(Base):
    __tablename__ = "tlsrpt_tallies"
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # UTC, YYYY-MM-DD
    policy_domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    record_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of record
    policy_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of policy
    record: Mapped[str] = mapped_column(Text)  # the TLSRPT record the MTA saw ("" unknown)
    policy: Mapped[str] = mapped_column(Text)  # JSON: type, domain, strings, mx-host
    successful: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)


class DetailRow(Base):
    __tablename__ = "tlsrpt_details"
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    policy_domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    record_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    detail_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    detail: Mapped[str] = mapped_column(Text)  # JSON of the failure-details entry
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class OutgoingReport(Base):
    __tablename__ = "tlsrpt_outgoing"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[str] = mapped_column(String(10), index=True)
    policy_domain: Mapped[str] = mapped_column(String(255))
    record_key: Mapped[str] = mapped_column(String(64))
    report_id: Mapped[str] = mapped_column(String(512), unique=True)
    document: Mapped[bytes] = mapped_column(LargeBinary)  # the report JSON, gzip
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    deadline: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))  # §5.5: 24 h
    # pending | sent | failed (gave up) | no-rua (the domain takes no reports)
    status: Mapped[str] = mapped_column(String(16), index=True)
    next_attempt: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sessions: Mapped[int] = mapped_column(BigInteger, default=0)


class DeliveryRow(Base):
    __tablename__ = "tlsrpt_deliveries"
    report: Mapped[int] = mapped_column(Integer, primary_key=True)  # tlsrpt_outgoing.id
    uri: Mapped[str] = mapped_column(String(1024), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | accepted | failed | suppressed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EndpointRow(Base):
    __tablename__ = "tlsrpt_endpoints"
    uri: Mapped[str] = mapped_column(String(1024), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row
    suppressed_until: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_success: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IntakeRow(Base):
    __tablename__ = "tlsrpt_intake"
    source: Mapped[str] = mapped_column(String(512), primary_key=True)
    position: Mapped[str] = mapped_column(Text, default="{}")  # JSON: where a log was read to
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    sessions: Mapped[int] = mapped_column(BigInteger, default=0)
    malformed: Mapped[int] = mapped_column(BigInteger, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
