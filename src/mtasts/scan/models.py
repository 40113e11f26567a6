"""A scan's tables, in the report store's schema (one Alembic history; migration 0005).

Every row is keyed by the scan and what it is about, so a job that runs twice (the
engine delivers at least once) writes the same row twice, never a second row.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mtasts.reports.models import Base


class ScanRow(Base):
    __tablename__ = "scans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))  # running | cancelled | done
    options: Mapped[str] = mapped_column(Text)  # JSON: network options and limits
    domains: Mapped[int] = mapped_column(Integer)
    batches: Mapped[int] = mapped_column(Integer)
    opted_out: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ScanDomainRow(Base):
    __tablename__ = "scan_domains"
    __table_args__ = (
        Index("ix_scan_domains_batch", "scan_id", "batch"),
        Index("ix_scan_domains_state", "scan_id", "state"),
    )
    scan_id: Mapped[int] = mapped_column(
        ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True
    )
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    batch: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10))  # pending | gathered | judged
    facts: Mapped[str | None] = mapped_column(Text, nullable=True)  # phase 1, without probes
    provider: Mapped[str | None] = mapped_column(String(255), nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(10), nullable=True)
    mode: Mapped[str | None] = mapped_column(String(10), nullable=True)
    tlsrpt: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # the check --json document
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it was not gathered
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # gathering attempts
    judged_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ScanPairRow(Base):
    __tablename__ = "scan_pairs"
    __table_args__ = (Index("ix_scan_pairs_state", "scan_id", "state"),)
    scan_id: Mapped[int] = mapped_column(
        ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True
    )
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(10))  # pending | done | skipped (opted out)
    probe: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of probes
    error_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    probed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ScanLinkRow(Base):
    """Which domain needs which pair: a pair's probe finishing makes its domains judgeable."""

    __tablename__ = "scan_links"
    __table_args__ = (Index("ix_scan_links_pair", "scan_id", "host", "address"),)
    scan_id: Mapped[int] = mapped_column(
        ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True
    )
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)


class ScanPaceRow(Base):
    """Per-address and per-provider pacing shared by all workers: the earliest time (epoch
    seconds, the database's clock) the next probe of that key may start."""

    __tablename__ = "scan_pace"
    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float, default=0.0)  # as migration 0005 made it
