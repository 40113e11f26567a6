"""The report store: SQLite by default, PostgreSQL by URL; every report kept exactly once.

A report is identified by its submitter (the organisation name) and its
``report-id`` (RFC 8460 §4.4); the raw bytes by their SHA-256. Each report is
stored in its own transaction, so a crash at any point loses nothing already
committed and a re-run stores nothing twice.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mtasts import tlsrpt
from mtasts.tlsrpt import Report

from .models import FailureRow, PolicyRow, Quarantined, RawReport
from .models import Report as ReportRow


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class Stored:
    outcome: Outcome
    detail: str = ""


def default_url() -> str:
    """``MTASTS_DB``, else a SQLite file in the user's data folder."""
    if os.environ.get("MTASTS_DB"):
        return os.environ["MTASTS_DB"]
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "mtasts"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'reports.sqlite'}"


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_store(url: str) -> ReportStore:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    store = ReportStore(engine)
    store.migrate()
    return store


class ReportStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self) -> None:
        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("mtasts.reports") / "migrations")
        )
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _raw(self, session: Session, data: bytes, source: str, now: dt.datetime) -> RawReport:
        digest = hashlib.sha256(data).hexdigest()
        raw = session.scalar(select(RawReport).where(RawReport.sha256 == digest))
        if raw is None:
            raw = RawReport(
                sha256=digest,
                data=gzip.compress(data, 6),
                size=len(data),
                source=source,
                received_at=now,
            )
            session.add(raw)
            session.flush()
        return raw

    def ingest(self, data: bytes, source: str, submitter_hint: str | None = None) -> Stored:
        """Parse and store one report file (JSON or gzip); unparseable input goes to quarantine."""
        try:
            return self._ingest(data, source, submitter_hint)
        except IntegrityError:
            # Another process stored the same report (or raw bytes) between our read and our write.
            return Stored(Outcome.DUPLICATE, "stored concurrently by another ingest")

    def _ingest(self, data: bytes, source: str, submitter_hint: str | None) -> Stored:
        now = dt.datetime.now(dt.UTC)
        with Session(self.engine) as session, session.begin():
            raw = self._raw(session, data, source, now)
            try:
                report = tlsrpt.parse_report(data)
            except tlsrpt.ReportError as exc:
                if session.scalar(select(Quarantined).where(Quarantined.raw_id == raw.id)) is None:
                    session.add(
                        Quarantined(
                            raw_id=raw.id, rule=exc.rule, reason=str(exc), source=source, at=now
                        )
                    )
                return Stored(Outcome.QUARANTINED, str(exc))
            submitter = (report.organization_name or submitter_hint or "unknown").strip().lower()
            exists = session.scalar(
                select(ReportRow.id).where(
                    ReportRow.submitter == submitter, ReportRow.report_id == report.report_id
                )
            )
            if exists is not None:
                return Stored(Outcome.DUPLICATE, f"{submitter} {report.report_id}")
            self._add(session, report, submitter, raw.id, now)
        return Stored(Outcome.STORED, f"{submitter} {report.report_id}")

    def _add(
        self, session: Session, report: Report, submitter: str, raw_id: int, now: dt.datetime
    ) -> None:
        row = ReportRow(
            submitter=submitter, report_id=report.report_id, organization=report.organization_name,
            contact=report.contact_info, start=report.date_range.start, end=report.date_range.end,
            raw_id=raw_id, warnings="\n".join(report.warnings), ingested_at=now,
        )  # fmt: skip
        session.add(row)
        session.flush()
        day = report.date_range.start.astimezone(dt.UTC).date()
        for result in report.policies:
            policy = PolicyRow(
                report_id=row.id, submitter=submitter, day=day, policy_type=str(result.policy.policy_type),
                policy_domain=result.policy.policy_domain.lower().rstrip("."),
                policy_string="\n".join(result.policy.policy_string) if result.policy.policy_string else None,
                mx_host=" ".join(result.policy.mx_host), successful=result.successful_sessions,
                failed=result.failed_sessions,
            )  # fmt: skip
            session.add(policy)
            session.flush()
            session.add_all(
                FailureRow(
                    policy_id=policy.id,
                    result_type=d.result_type,
                    sending_ip=d.sending_mta_ip,
                    receiving_mx=d.receiving_mx_hostname,
                    receiving_ip=d.receiving_ip,
                    sessions=d.failed_session_count,
                    reason_code=d.failure_reason_code,
                )
                for d in result.failure_details
            )

    def quarantine_raw(self, data: bytes, source: str, error: tlsrpt.ReportError) -> Stored:
        """Keep input that is not even a report file (a broken zip), with the rule it broke."""
        now = dt.datetime.now(dt.UTC)
        with Session(self.engine) as session, session.begin():
            raw = self._raw(session, data, source, now)
            if session.scalar(select(Quarantined).where(Quarantined.raw_id == raw.id)) is None:
                session.add(
                    Quarantined(
                        raw_id=raw.id, rule=error.rule, reason=str(error), source=source, at=now
                    )
                )
        return Stored(Outcome.QUARANTINED, str(error))

    def quarantine(self) -> list[Quarantined]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Quarantined).order_by(Quarantined.id)))

    def counts(self) -> dict[str, int]:
        with Session(self.engine) as session:
            return {
                name: session.scalar(select(func.count()).select_from(model)) or 0
                for name, model in (
                    ("reports", ReportRow),
                    ("raw", RawReport),
                    ("quarantined", Quarantined),
                )
            }


__all__ = ["Outcome", "ReportStore", "Stored", "default_url", "open_store"]
