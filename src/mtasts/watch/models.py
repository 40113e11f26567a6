"""The watch tables, in the report store's schema (one Alembic history; migration 0003).

Observations are compact: a run that saw exactly what the last one saw moves that
row's ``last_seen`` instead of storing the facts again, so an hourly watch of a
stable domain costs one row per change, not one per hour.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mtasts.reports.models import Base


class WatchedDomain(Base):
    __tablename__ = "watch_domains"
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # own | partner
    label: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(Text, default="{}")  # changes.DomainState as JSON
    last_run: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_due: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Observation(Base):
    __tablename__ = "watch_observations"
    __table_args__ = (Index("ix_watch_observations_domain_seen", "domain", "first_seen"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255))
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))  # unchanged since
    runs: Mapped[int] = mapped_column(Integer, default=1)
    digest: Mapped[str] = mapped_column(String(64))  # of the facts without timings
    facts: Mapped[bytes] = mapped_column(LargeBinary)  # gzip of the facts document (JSON)
    findings: Mapped[str] = mapped_column(Text)  # JSON: [[code, severity, subject], ...]
    verdict: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))


class EventRow(Base):
    __tablename__ = "watch_events"
    __table_args__ = (Index("ix_watch_events_domain_at", "domain", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    domain: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    after: Mapped[str | None] = mapped_column(Text, nullable=True)
    horizon: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OutboxRow(Base):
    """One event still to deliver (or delivered) on one channel: written with the event, in
    the same transaction, so a crash or a dead channel loses nothing."""

    __tablename__ = "watch_outbox"
    __table_args__ = (Index("ix_watch_outbox_pending", "channel", "sent_at", "next_attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("watch_events.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ChannelRow(Base):
    __tablename__ = "watch_channels"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_success: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class RunRow(Base):
    __tablename__ = "watch_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    domains: Mapped[int] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer, default=0)
