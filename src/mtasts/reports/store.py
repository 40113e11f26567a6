"""The report store: SQLite by default, PostgreSQL by URL; every report kept exactly once.

A report is identified by its submitter (the organisation name) and its
``report-id`` (RFC 8460 §4.4); the raw bytes by their SHA-256. Reports are
stored in batches, each batch in one transaction: a crash at any point loses
nothing already committed, and a re-run stores nothing twice. Parsing happens
before the transaction opens, so a batch holds the database only for its
inserts.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session

from mtasts import tlsrpt
from mtasts.files import private_dir, private_file
from mtasts.sts.domain import normalise_host
from mtasts.tlsrpt.parse import DEFAULT_MAX_SIZE

from .models import FailureRow, PolicyRow, Quarantined, RawReport
from .models import Report as ReportRow
from .normalise import NAME, SHORT, clean, storable
from .provenance import Channel, Provenance, claimed_domain

# The newest migration in migrations/versions; a test keeps the two in step.
HEAD_REVISION = "0006"
_LEGACY = "legacy"  # the content hash of rows stored before migration 0002
# Bound parameters per IN list: well under SQLite's 32,766 and PostgreSQL's 65,535.
_CHUNK = 500
_RETRIES = 3
_GZIP = b"\x1f\x8b"
_FAILURE_COLUMNS = (
    "policy_id",
    "result_type",
    "sending_ip",
    "receiving_mx",
    "receiving_ip",
    "sessions",
    "reason_code",
)


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    CONFLICT = "conflict"  # stored, but another content already holds its submitter and id


@dataclass(frozen=True, slots=True)
class Stored:
    outcome: Outcome
    detail: str = ""


_BY_FILE = Provenance(Channel.FILE)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One report file to store, where it came from, and the submitter its mail named."""

    data: bytes
    source: str
    submitter_hint: str | None = None
    error: tlsrpt.ReportError | None = None  # known unreadable before parsing (a broken zip)
    text: bytes | None = None  # the JSON of a gzip ``data``, already inflated within its budget
    provenance: Provenance = _BY_FILE
    # The domain the report is about when the report itself omits policy-domain: the mail's
    # TLS-Report-Domain header (RFC 8460 §5.3) or the host an HTTPS rua was POSTed to.
    domain_hint: str | None = None


# One failure-details row: result type, sending IP, receiving MX, receiving IP, sessions,
# reason code (the columns of FailureRow, in order).
FailureValues = tuple[str, str | None, str | None, str | None, int, str | None]
# One policy_results row without its report id (policy type, domain, string, MX hosts,
# successful, failed), and its failure rows.
PolicyValues = tuple[str, str, str | None, str, int, int, tuple[FailureValues, ...]]


@dataclass(frozen=True, slots=True)
class Parsed:
    """A report file as :func:`parse_item` read it, in the store's own terms: the rows it
    adds, or the rule it broke.

    Plain values only: a worker process hands thousands of these back a second, and a
    parsed Report's tree of objects cost more to pickle and unpickle than to parse.
    """

    digest: str  # SHA-256 of the bytes as received
    source: str  # where it came from, as given (cleaned when stored)
    size: int  # bytes as received
    packed: bytes  # gzip of the bytes as received: what raw_reports keeps
    channel: Channel
    dkim_domain: str | None
    error: tlsrpt.ReportError | None = None
    submitter: str = ""
    report_id: str = ""
    content: str = ""  # SHA-256 of the report as stored, whatever its compression or channel
    # organization, contact, start, end, warnings, sender domain
    report: tuple[str, str, dt.datetime, dt.datetime, str, str] | None = None
    policies: tuple[PolicyValues, ...] = ()
    held: int = 0  # bytes this holds in memory, for a batch's bound

    def __reduce__(self) -> tuple[type[Parsed], tuple[Any, ...]]:
        # The dataclass default (a dict of every field, by name) is several times slower.
        return (
            Parsed,
            (
                self.digest,
                self.source,
                self.size,
                self.packed,
                self.channel,
                self.dkim_domain,
                self.error,
                self.submitter,
                self.report_id,
                self.content,
                self.report,
                self.policies,
                self.held,
            ),
        )

    def refused(self, error: tlsrpt.ReportError) -> Parsed:
        """This report file, to go to the quarantine with ``error`` instead."""
        return replace(self, error=error, report=None, policies=())


@dataclass(frozen=True, slots=True)
class Conflict:
    id: int
    submitter: str
    report_id: str
    channel: str
    dkim_domain: str | None
    source: str
    ingested_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Pruned:
    reports: int
    policy_rows: int
    raw: int


def default_url() -> str:
    """``MTASTS_DB``, else the URL in the file ``MTASTS_DB_FILE`` names, else a SQLite file in
    the user's data folder. A URL with a password belongs in a file or the environment, never
    on the command line, where every local user sees it in ps (security review #27)."""
    if os.environ.get("MTASTS_DB"):
        return os.environ["MTASTS_DB"]
    if os.environ.get("MTASTS_DB_FILE"):
        return Path(os.environ["MTASTS_DB_FILE"]).read_text(encoding="utf-8").strip()
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "mtasts"
    private_dir(base)
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
    database = engine.url.database
    if database and engine.url.query.get("uri") == "true" and database.startswith("file:"):
        # A SQLite URI filename (file:PATH?mode=ro): the file is PATH, not a folder "file:".
        database = database.removeprefix("file:").split("?", 1)[0] or None
    if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
        # SQLite makes the file (and its -wal, -shm) with the umask's mode: make it private first.
        private_file(Path(database))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    store = ReportStore(engine)
    for attempt in range(_RETRIES):
        try:
            store.migrate()
            break
        except (IntegrityError, OperationalError, ProgrammingError):
            # Two processes opening a new store at once (the web app and a cron ingest)
            # both try to create the tables; the loser finds them made on a later try.
            if attempt == _RETRIES - 1:
                raise
            time.sleep(0.5)
    return store


def store_error(exc: SQLAlchemyError) -> str:
    """A database failure in one line: the driver's own message, without the SQL and parameters."""
    original = getattr(exc, "orig", None) or exc
    first = str(original).strip().splitlines()
    return f"the report store failed: {first[0] if first else type(original).__name__}"


def parse_item(item: Incoming, max_size: int) -> Parsed:
    """One report file read and judged (RFC 8460 §4), with its digests and its rows: no
    I/O, so it runs in a worker process while the store writes."""
    # Gzip again what came gzipped would spend the CPU of compressing to gain nothing:
    # level 0 stores it as it is, still a gzip stream to whoever reads raw_reports.
    packed = gzip.compress(item.data, 0 if item.data.startswith(_GZIP) else 6)
    held = len(packed) + len(item.text or b"")
    digest = hashlib.sha256(item.data).hexdigest()
    # What every outcome records: the bytes as received, and where they came from.
    parsed = partial(
        Parsed,
        digest,
        item.source,
        len(item.data),
        packed,
        item.provenance.channel,
        item.provenance.dkim_domain,
        held=held,
    )
    if item.error is not None:
        return parsed(item.error)
    try:
        text = item.data if item.text is None else item.text
        report = tlsrpt.parse_report(text, max_size=max_size, domain_hint=item.domain_hint)
    except tlsrpt.ReportError as exc:
        return parsed(exc)
    try:
        report = storable(report)
    except ValueError as exc:
        return parsed(tlsrpt.ReportError(str(exc), rule="report.too-many", section="§4.4"))
    hint = clean(item.submitter_hint, NAME) if item.submitter_hint else None
    submitter = (report.organization_name or hint or "unknown").strip().lower()
    content = hashlib.sha256(json.dumps(report.to_dict(), sort_keys=True).encode()).hexdigest()
    sender = claimed_domain(item.submitter_hint, report.contact_info, report.organization_name)
    return parsed(
        None,
        submitter,
        report.report_id,
        content,
        (
            report.organization_name,
            report.contact_info,
            report.date_range.start,
            report.date_range.end,
            "\n".join(report.warnings),
            clean(sender, NAME),
        ),
        tuple(_policy_values(result) for result in report.policies),
    )


def _policy_values(result: tlsrpt.PolicyResult) -> PolicyValues:
    policy = result.policy
    return (
        str(policy.policy_type),
        normalise_host(policy.policy_domain),
        "\n".join(policy.policy_string) if policy.policy_string else None,
        " ".join(policy.mx_host),
        result.successful_sessions,
        result.failed_sessions,
        tuple(
            (
                d.result_type,
                d.sending_mta_ip,
                d.receiving_mx_hostname,
                d.receiving_ip,
                d.failed_session_count,
                d.failure_reason_code,
            )
            for d in result.failure_details
        ),
    )


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for first in range(0, len(values), _CHUNK):
        yield values[first : first + _CHUNK]


def _inserted_ids(
    connection: Connection,
    model: type[RawReport | ReportRow | PolicyRow],
    rows: list[dict[str, Any]],
    key: tuple[str, ...],
) -> list[int]:
    """Insert ``rows`` and return their new ids in the rows' order.

    The ids come back matched by ``key``, columns that tell the rows apart: asking the
    database to return them in order made SQLAlchemy insert one row per statement on
    SQLite, which promises no order for a multi-row INSERT ... RETURNING.
    """
    if not rows:
        return []
    table = model.__table__.c
    statement = insert(model).returning(table.id, *(table[name] for name in key))
    ids = {tuple(found[1:]): found[0] for found in connection.execute(statement, rows)}
    return [ids[tuple(row[name] for name in key)] for row in rows]


def _insert(
    connection: Connection, model: type[Quarantined | FailureRow], rows: list[dict[str, Any]]
) -> None:
    if rows:  # an empty executemany would insert one row of NULLs
        connection.execute(insert(model), rows)


class ReportStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def migrate(self) -> None:
        """Bring the schema to the newest revision. A store already there costs one query:
        alembic is imported only to upgrade, which keeps `reports ingest -` (started by
        Postfix once per report mail) quick."""
        if self._at_head():
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("mtasts.reports") / "migrations")
        )
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _at_head(self) -> bool:
        try:
            with self.engine.connect() as connection:
                version = connection.exec_driver_sql(
                    "SELECT version_num FROM alembic_version"
                ).scalar()
        except SQLAlchemyError:
            return False  # a new store: no version table yet
        return version == HEAD_REVISION

    def ingest(
        self,
        data: bytes,
        source: str,
        submitter_hint: str | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        channel: Channel = Channel.FILE,
        domain_hint: str | None = None,
    ) -> Stored:
        """Parse and store one report file (JSON or gzip); unparseable input goes to quarantine."""
        item = Incoming(
            data, source, submitter_hint, provenance=Provenance(channel), domain_hint=domain_hint
        )
        return self.ingest_many([item], max_size)[0]

    def ingest_many(
        self, items: Sequence[Incoming], max_size: int = DEFAULT_MAX_SIZE
    ) -> list[Stored]:
        """Store every item in one transaction; one outcome per item, in order.

        ``max_size`` bounds each report, also after decompression (RFC 8460 §5.3 gzip).
        """
        return self.store_parsed([parse_item(item, max_size) for item in items])

    def store_parsed(self, parsed: Sequence[Parsed]) -> list[Stored]:
        """Store reports :func:`parse_item` read, in one transaction; one outcome per report."""
        for _ in range(_RETRIES):
            try:
                return self._store(parsed)
            except IntegrityError:
                # Another process committed some of the same reports between our reads
                # and our writes; the next attempt reads them and counts them duplicates.
                continue
            except DataError:
                break  # a value the database refuses: find which report holds it
        return self._store_each(parsed)

    def _store_each(self, parsed: Sequence[Parsed]) -> list[Stored]:
        """One transaction per report, so a report the database refuses fails alone.

        The slow path, taken only after a batch failed on its data: that report goes to
        the quarantine with the database's reason, and the rest of the batch is stored.
        """
        outcomes: list[Stored] = []
        for p in parsed:
            try:
                outcomes += self._store([p])
                continue
            except IntegrityError:
                try:  # a racing ingest stored it meanwhile: now it reads as a duplicate
                    outcomes += self._store([p])
                    continue
                except (IntegrityError, DataError) as exc:
                    failure: SQLAlchemyError = exc
            except DataError as exc:
                failure = exc
            refused = tlsrpt.ReportError(
                f"the report store cannot hold this report ({store_error(failure)})",
                rule="report.store",
                section="§4.4",
            )
            outcomes += self._store([p.refused(refused)])
        return outcomes

    def _store(self, parsed: Sequence[Parsed]) -> list[Stored]:
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as connection:
            raw_ids = self._known_raw(connection, {p.digest for p in parsed})
            known = self._known_reports(connection, parsed)
            quarantined = self._known_quarantine(connection, raw_ids.values())
            outcomes: list[Stored] = []
            wanted_raw: dict[str, Parsed] = {}
            keep: list[Parsed] = []
            conflicts: set[tuple[str, str]] = set()
            vouched: list[tuple[int, Parsed]] = []
            for p in parsed:
                if p.report is None:
                    assert p.error is not None
                    outcomes.append(Stored(Outcome.QUARANTINED, f"{p.error} [{p.error.rule}]"))
                    if p.digest not in quarantined:
                        quarantined.add(p.digest)
                        keep.append(p)
                        wanted_raw.setdefault(p.digest, p)
                    continue
                key = (p.submitter, p.report_id)
                contents = known.setdefault(key, {})
                same = contents.get(p.content, contents.get(_LEGACY))
                if same is not None or (contents and p.content in contents):
                    outcomes.append(Stored(Outcome.DUPLICATE, f"{key[0]} {key[1]}"))
                    if p.dkim_domain and same is not None and not same[1]:
                        vouched.append((same[0], p))  # now authenticated
                    continue
                if contents:
                    conflicts.add(key)
                contents[p.content] = None  # a second copy within this batch is a duplicate
                outcome = Outcome.CONFLICT if key in conflicts else Outcome.STORED
                outcomes.append(Stored(outcome, f"{key[0]} {key[1]}"))
                keep.append(p)
                wanted_raw.setdefault(p.digest, p)
            new_raw = [d for d in wanted_raw if d not in raw_ids]
            ids = _inserted_ids(
                connection,
                RawReport,
                [
                    {
                        "sha256": d,
                        "data": wanted_raw[d].packed,
                        "size": wanted_raw[d].size,
                        "source": clean(wanted_raw[d].source),
                        "received_at": now,
                    }
                    for d in new_raw
                ],
                ("sha256",),
            )
            raw_ids.update(zip(new_raw, ids, strict=True))
            _insert(
                connection,
                Quarantined,
                [
                    {
                        "raw_id": raw_ids[p.digest],
                        "rule": clean(p.error.rule, SHORT),
                        "reason": clean(str(p.error)),
                        "source": clean(p.source),
                        "at": now,
                    }
                    for p in keep
                    if p.error is not None
                ],
            )
            self._add_reports(connection, [p for p in keep if p.report is not None], raw_ids, now)
            self._flag(connection, conflicts, vouched)
        return outcomes

    @staticmethod
    def _flag(
        connection: Connection,
        conflicts: set[tuple[str, str]],
        vouched: list[tuple[int, Parsed]],
    ) -> None:
        """Mark every report of a conflicting (submitter, id); record a later DKIM proof."""
        table = ReportRow.__table__.c
        for chunk in _chunks(sorted(conflicts)):
            connection.execute(
                update(ReportRow)
                .where(tuple_(table.submitter, table.report_id).in_(chunk))
                .values(conflict=True)
            )
        for row_id, proof in vouched:
            connection.execute(
                update(ReportRow)
                .where(table.id == row_id)
                .values(dkim_domain=proof.dkim_domain, channel=str(proof.channel))
            )

    @staticmethod
    def _known_raw(connection: Connection, digests: Iterable[str]) -> dict[str, int]:
        table = RawReport.__table__.c
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(digests)):
            query = select(table.sha256, table.id).where(table.sha256.in_(chunk))
            found.update((digest, row_id) for digest, row_id in connection.execute(query))
        return found

    @staticmethod
    def _known_reports(
        connection: Connection, parsed: Sequence[Parsed]
    ) -> dict[tuple[str, str], dict[str, tuple[int, str | None] | None]]:
        """Per (submitter, id) already stored: each content hash -> (row id, DKIM domain)."""
        table = ReportRow.__table__.c
        keys = sorted({(p.submitter, p.report_id) for p in parsed if p.report is not None})
        found: dict[tuple[str, str], dict[str, tuple[int, str | None] | None]] = {}
        for chunk in _chunks(keys):
            query = select(
                table.submitter, table.report_id, table.content_sha256, table.id, table.dkim_domain
            ).where(tuple_(table.submitter, table.report_id).in_(chunk))
            for submitter, report_id, content, row_id, dkim_domain in connection.execute(query):
                found.setdefault((submitter, report_id), {})[content] = (row_id, dkim_domain)
        return found

    @staticmethod
    def _known_quarantine(connection: Connection, raw_ids: Iterable[int]) -> set[str]:
        """Digests of raw reports already in the quarantine."""
        raw, held = RawReport.__table__.c, Quarantined.__table__.c
        found: set[str] = set()
        for chunk in _chunks(sorted(raw_ids)):
            query = (
                select(raw.sha256)
                .join_from(Quarantined.__table__, RawReport.__table__, held.raw_id == raw.id)
                .where(held.raw_id.in_(chunk))
            )
            found.update(connection.execute(query).scalars())
        return found

    @staticmethod
    def _add_reports(
        connection: Connection, parsed: Sequence[Parsed], raw_ids: dict[str, int], now: dt.datetime
    ) -> None:
        rows = []
        for p in parsed:
            assert p.report is not None
            organization, contact, start, end, warnings, sender = p.report
            rows.append(
                {
                    "submitter": p.submitter,
                    "report_id": p.report_id,
                    "organization": organization,
                    "contact": contact,
                    "start": start,
                    "end": end,
                    "raw_id": raw_ids[p.digest],
                    "warnings": warnings,
                    "ingested_at": now,
                    "content_sha256": p.content,
                    "channel": str(p.channel),
                    "dkim_domain": p.dkim_domain,
                    "conflict": False,
                    "sender_domain": sender,
                }
            )
        report_ids = _inserted_ids(
            connection, ReportRow, rows, ("submitter", "report_id", "content_sha256")
        )
        policies: list[dict[str, Any]] = []
        details: list[tuple[FailureValues, ...]] = []
        for p, row_id in zip(parsed, report_ids, strict=True):
            assert p.report is not None
            day = p.report[2].astimezone(dt.UTC).date()
            for position, policy in enumerate(p.policies):
                kind, domain, text, hosts, successful, failed, found = policy
                policies.append(
                    {
                        "report_id": row_id,
                        "position": position,
                        "submitter": p.submitter,
                        "day": day,
                        "policy_type": kind,
                        "policy_domain": domain,
                        "policy_string": text,
                        "mx_host": hosts,
                        "successful": successful,
                        "failed": failed,
                    }
                )
                details.append(found)
        policy_ids = _inserted_ids(connection, PolicyRow, policies, ("report_id", "position"))
        failures = [
            dict(zip(_FAILURE_COLUMNS, (policy_id, *d), strict=True))
            for policy_id, found in zip(policy_ids, details, strict=True)
            for d in found
        ]
        _insert(connection, FailureRow, failures)

    def quarantined_raw(self) -> list[tuple[int, bytes, str]]:
        """(quarantine id, raw bytes as received, source) of every quarantined input."""
        query = (
            select(Quarantined.id, RawReport.data, Quarantined.source)
            .join_from(Quarantined, RawReport, Quarantined.raw_id == RawReport.id)
            .order_by(Quarantined.id)
        )
        with self.engine.connect() as connection:
            return [
                (row_id, gzip.decompress(data), source)
                for row_id, data, source in connection.execute(query)
            ]

    def quarantined_bytes(self, quarantine_id: int) -> bytes | None:
        """The raw bytes of one quarantined input as received, or None when no such id."""
        query = (
            select(RawReport.data)
            .join_from(Quarantined, RawReport, Quarantined.raw_id == RawReport.id)
            .where(Quarantined.id == quarantine_id)
        )
        with self.engine.connect() as connection:
            data = connection.scalar(query)
        return gzip.decompress(data) if data is not None else None

    def drop(self, quarantine_id: int) -> bool:
        """Delete a quarantined input and its raw bytes (unless a stored report shares them)."""
        with self.engine.begin() as connection:
            raw_id = connection.scalar(
                select(Quarantined.raw_id).where(Quarantined.id == quarantine_id)
            )
            if raw_id is None:
                return False
            connection.execute(delete(Quarantined).where(Quarantined.id == quarantine_id))
            shared = connection.scalar(
                select(func.count()).select_from(ReportRow).where(ReportRow.raw_id == raw_id)
            )
            if not shared:
                connection.execute(delete(RawReport).where(RawReport.id == raw_id))
        return True

    def vacuum(self) -> tuple[int, int] | None:
        """Give a SQLite file's free pages back to the disk after a prune: (bytes before,
        after); None for a database that manages its own space (PostgreSQL's autovacuum)."""
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        path = Path(database)
        before = path.stat().st_size if path.exists() else 0
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM")
            # In WAL mode the rewritten pages sit in the -wal file until a checkpoint.
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, path.stat().st_size if path.exists() else 0

    def release(self, quarantine_id: int) -> None:
        """Take an input out of the quarantine once its reports are stored; its raw bytes stay."""
        with self.engine.begin() as connection:
            connection.execute(delete(Quarantined).where(Quarantined.id == quarantine_id))

    def conflicts(self) -> list[Conflict]:
        """Every stored report whose submitter and id another content also holds."""
        query = (
            select(
                ReportRow.id,
                ReportRow.submitter,
                ReportRow.report_id,
                ReportRow.channel,
                ReportRow.dkim_domain,
                RawReport.source,
                ReportRow.ingested_at,
            )
            .join_from(ReportRow, RawReport, ReportRow.raw_id == RawReport.id)
            .where(ReportRow.conflict.is_(True))
            .order_by(ReportRow.submitter, ReportRow.report_id, ReportRow.id)
        )
        with self.engine.connect() as connection:
            return [Conflict(*row) for row in connection.execute(query)]

    def quarantine(self) -> list[Quarantined]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Quarantined).order_by(Quarantined.id)))

    def prune(self, before: dt.datetime, *, dry_run: bool = False) -> Pruned:
        """Delete reports whose range starts before ``before``, with their rows and raw bytes.

        Raw bytes still referred to (by a newer report or by the quarantine) stay.
        One transaction: an interrupted prune deletes nothing.
        """
        old = select(ReportRow.id).where(ReportRow.start < before)
        with self.engine.begin() as connection:
            reports = connection.scalar(
                select(func.count()).select_from(ReportRow).where(ReportRow.start < before)
            )
            policies = connection.scalar(
                select(func.count()).select_from(PolicyRow).where(PolicyRow.report_id.in_(old))
            )
            candidates = list(
                connection.scalars(
                    select(ReportRow.raw_id).where(ReportRow.start < before).distinct()
                )
            )
            kept = set(
                connection.scalars(select(ReportRow.raw_id).where(ReportRow.start >= before))
            )
            kept.update(connection.scalars(select(Quarantined.raw_id)))
            freed = [raw_id for raw_id in candidates if raw_id not in kept]
            if not dry_run:
                policy_ids = select(PolicyRow.id).where(PolicyRow.report_id.in_(old))
                connection.execute(delete(FailureRow).where(FailureRow.policy_id.in_(policy_ids)))
                connection.execute(delete(PolicyRow).where(PolicyRow.report_id.in_(old)))
                connection.execute(delete(ReportRow).where(ReportRow.start < before))
                for chunk in _chunks(freed):
                    connection.execute(delete(RawReport).where(RawReport.id.in_(chunk)))
        return Pruned(reports or 0, policies or 0, len(freed))

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


__all__ = [
    "Incoming",
    "Outcome",
    "Pruned",
    "ReportStore",
    "Stored",
    "default_url",
    "open_store",
    "store_error",
]
