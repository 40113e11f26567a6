"""The report store's tables (SQLAlchemy 2). Sized for a year of reports for thousands of domains:
the per-policy rows carry the policy domain and the day, indexed together, so a domain's last
30 days is one index range scan."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class RawReport(Base):
    """Every report as received, compressed, kept forever so a fixed parser can re-read it."""

    __tablename__ = "raw_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # gzip of the report bytes as received
    size: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Report(Base):
    __tablename__ = "reports"
    # A forged report with a real one's id must not hide it (security review #3): the
    # content hash is part of the key, and two contents under one id are flagged.
    __table_args__ = (
        UniqueConstraint(
            "submitter", "report_id", "content_sha256", name="uq_reports_submitter_id_content"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submitter: Mapped[str] = mapped_column(String(255))
    report_id: Mapped[str] = mapped_column(String(255))
    organization: Mapped[str] = mapped_column(String(255))
    contact: Mapped[str] = mapped_column(String(255))
    start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    end: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    raw_id: Mapped[int] = mapped_column(ForeignKey("raw_reports.id"))
    warnings: Mapped[str] = mapped_column(Text, default="")
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    content_sha256: Mapped[str] = mapped_column(String(64), default="legacy")
    channel: Mapped[str] = mapped_column(String(16), default="file")  # provenance.Channel
    dkim_domain: Mapped[str | None] = mapped_column(String(255), nullable=True)  # verified signer
    sender_domain: Mapped[str] = mapped_column(String(255), default="")  # what the report claims
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)


class PolicyRow(Base):
    __tablename__ = "policy_results"
    __table_args__ = (Index("ix_policy_results_domain_day", "policy_domain", "day"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), index=True)
    # Its index in the report's policies (RFC 8460 §4.4): tells one report's rows apart.
    position: Mapped[int] = mapped_column(Integer, server_default="0")
    submitter: Mapped[str] = mapped_column(String(255))
    day: Mapped[dt.date] = mapped_column(Date)  # the UTC day the report's range starts on
    policy_type: Mapped[str] = mapped_column(String(32))
    policy_domain: Mapped[str] = mapped_column(String(255))
    policy_string: Mapped[str | None] = mapped_column(Text, nullable=True)
    mx_host: Mapped[str] = mapped_column(Text, default="")
    successful: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)


class FailureRow(Base):
    __tablename__ = "failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_id: Mapped[int] = mapped_column(
        ForeignKey("policy_results.id", ondelete="CASCADE"), index=True
    )
    result_type: Mapped[str] = mapped_column(String(64))
    sending_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    receiving_mx: Mapped[str | None] = mapped_column(String(255), nullable=True)
    receiving_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sessions: Mapped[int] = mapped_column(BigInteger)
    reason_code: Mapped[str | None] = mapped_column(Text, nullable=True)


class Quarantined(Base):
    """A report that could not be parsed: the raw bytes stay, with the rule it broke."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    raw_id: Mapped[int] = mapped_column(ForeignKey("raw_reports.id"), unique=True)
    rule: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
