"""A scan's state in the database: its domains (pending, gathered, judged), the shared
(MX host, address) probes, which domain needs which probe, and the results.

Every write is an upsert or a guarded update keyed by the scan and its subject, so a job
the engine runs twice changes nothing the second time (at-least-once delivery, issue #15).
Works on SQLite (the in-memory engine's tests) and PostgreSQL (real scans).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from mtasts.check.facts import DomainFacts
from mtasts.errors import MtastsError

from .models import ScanDomainRow, ScanLinkRow, ScanPairRow, ScanRow
from .plan import Pair

_CHUNK = 500  # names per IN (...) list


class ScanError(MtastsError, ValueError):
    """A scan that does not exist or cannot be made; the message names it."""


class ScanStatus(StrEnum):
    RUNNING = "running"
    CANCELLED = "cancelled"
    DONE = "done"


class DomainState(StrEnum):
    PENDING = "pending"  # phase 1 not done
    GATHERED = "gathered"  # DNS and policy known; waiting for its MX probes
    JUDGED = "judged"  # the result is stored


class PairState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"  # on the opt-out list: never probed


@dataclass(frozen=True, slots=True)
class ScanInfo:
    id: int
    name: str
    status: ScanStatus
    options: dict[str, Any]
    domains: int
    batches: int
    opted_out: int
    created_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Gathered:
    """One domain's phase-1 facts, the pairs it needs, and its provider."""

    facts: DomainFacts
    pairs: Sequence[Pair]
    provider: str | None
    error: str | None = None  # gathering gave up: ``facts`` only says so


@dataclass(frozen=True, slots=True)
class Ready:
    """A domain ready to judge: its phase-1 facts (JSON) and each pair's stored probes
    (None: not probed, on the opt-out list)."""

    domain: str
    facts: str
    probes: dict[Pair, list[dict[str, Any]] | None]


@dataclass(frozen=True, slots=True)
class Judged:
    domain: str
    document: dict[str, Any]
    verdict: str
    mode: str | None
    tlsrpt: bool


@dataclass(frozen=True, slots=True)
class Progress:
    domains: Counter[str]
    pairs: Counter[str]
    linked: int  # (domain, pair) links: the probes a per-domain check would make
    error_kinds: Counter[str]
    gather_errors: int
    verdicts: Counter[str]
    judged_last_minute: int
    first_judged: dt.datetime | None
    last_judged: dt.datetime | None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _info(row: ScanRow) -> ScanInfo:
    return ScanInfo(
        row.id,
        row.name,
        ScanStatus(row.status),
        json.loads(row.options),
        row.domains,
        row.batches,
        row.opted_out,
        _utc(row.created_at) or row.created_at,
        _utc(row.finished_at),
    )


# Row-by-row updates as one executemany each: built once, compiled once (SQLAlchemy caches
# the compiled form), sent as one batch. Compiling a statement per row cost more CPU than
# the probes of the rows it stored. Parameter names are prefixed: a bound name may not
# repeat a column the statement sets.
_GATHERED = (
    update(ScanDomainRow)
    .where(
        ScanDomainRow.scan_id == bindparam("k_scan"),
        ScanDomainRow.domain == bindparam("k_domain"),
        ScanDomainRow.state == str(DomainState.PENDING),
    )
    .values(
        state=str(DomainState.GATHERED),
        facts=bindparam("v_facts"),
        provider=bindparam("v_provider"),
        error=bindparam("v_error"),
    )
)
_PROBED = (
    update(ScanPairRow)
    .where(
        ScanPairRow.scan_id == bindparam("k_scan"),
        ScanPairRow.host == bindparam("k_host"),
        ScanPairRow.address == bindparam("k_address"),
        ScanPairRow.state == str(PairState.PENDING),
    )
    .values(
        state=str(PairState.DONE),
        probe=bindparam("v_probe"),
        error_kind=bindparam("v_error_kind"),
        probed_at=bindparam("v_at"),
    )
)
_BEGIN_PROBES = (
    update(ScanPairRow)
    .where(
        ScanPairRow.scan_id == bindparam("k_scan"),
        ScanPairRow.address == bindparam("k_address"),
        ScanPairRow.host.in_(bindparam("k_hosts", expanding=True)),
        ScanPairRow.state == str(PairState.PENDING),
    )
    .values(attempts=ScanPairRow.attempts + 1)
    .returning(ScanPairRow.host, ScanPairRow.address, ScanPairRow.attempts)
)
_JUDGED = (
    update(ScanDomainRow)
    .where(
        ScanDomainRow.scan_id == bindparam("k_scan"),
        ScanDomainRow.domain == bindparam("k_domain"),
        ScanDomainRow.state == str(DomainState.GATHERED),
    )
    .values(
        state=str(DomainState.JUDGED),
        result=bindparam("v_result"),
        verdict=bindparam("v_verdict"),
        mode=bindparam("v_mode"),
        tlsrpt=bindparam("v_tlsrpt"),
        judged_at=bindparam("v_at"),
    )
)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class ScanStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = postgresql if engine.dialect.name == "postgresql" else sqlite

    # -- scans ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        domains: Sequence[str],
        options: dict[str, Any],
        batch_size: int,
        opted_out: int = 0,
    ) -> ScanInfo:
        now = dt.datetime.now(dt.UTC)
        batches = (len(domains) + batch_size - 1) // batch_size
        with self.engine.begin() as db:
            if db.execute(select(ScanRow.id).where(ScanRow.name == name)).first():
                raise ScanError(
                    f"a scan named {name!r} exists: choose another --name, or"
                    f" `mtasts scan resume {name}`"
                )
            scan_id = db.execute(
                insert(ScanRow)
                .values(
                    name=name,
                    created_at=now,
                    status=str(ScanStatus.RUNNING),
                    options=json.dumps(options, sort_keys=True),
                    domains=len(domains),
                    batches=batches,
                    opted_out=opted_out,
                )
                .returning(ScanRow.id)
            ).scalar_one()
            rows = [
                {
                    "scan_id": scan_id,
                    "domain": domain,
                    "batch": n // batch_size,
                    "state": str(DomainState.PENDING),
                    "attempts": 0,
                }
                for n, domain in enumerate(domains)
            ]
            for chunk in _chunks(rows):
                db.execute(insert(ScanDomainRow), list(chunk))
        if self.engine.dialect.name == "postgresql":
            # Fresh statistics, so the planner knows this scan's rows exist.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
                db.exec_driver_sql("ANALYZE scan_domains")
        return self.get(name)

    def get(self, name: str) -> ScanInfo:
        with self.engine.connect() as db:
            row = db.execute(select(ScanRow).where(ScanRow.name == name)).first()
        if row is None:
            known = [s.name for s in self.scans()]
            listed = ", ".join(known[-5:]) if known else "none yet"
            raise ScanError(f"no scan named {name!r} (scans: {listed})")
        return _info(ScanRow(**row._mapping))

    def scans(self) -> list[ScanInfo]:
        with self.engine.connect() as db:
            rows = db.execute(select(ScanRow).order_by(ScanRow.id)).all()
        return [_info(ScanRow(**r._mapping)) for r in rows]

    def set_status(self, scan_id: int, status: ScanStatus) -> None:
        with self.engine.begin() as db:
            db.execute(
                update(ScanRow)
                .where(ScanRow.id == scan_id)
                .values(
                    status=str(status),
                    finished_at=dt.datetime.now(dt.UTC) if status is ScanStatus.DONE else None,
                )
            )

    def finish_if_done(self, scan_id: int) -> bool:
        """Mark the scan done once every domain is judged; True when this call did it."""
        unjudged = exists().where(
            ScanDomainRow.scan_id == scan_id,
            ScanDomainRow.state.in_([str(DomainState.PENDING), str(DomainState.GATHERED)]),
        )
        with self.engine.begin() as db:
            done = db.execute(
                update(ScanRow)
                .where(
                    ScanRow.id == scan_id,
                    ScanRow.status == str(ScanStatus.RUNNING),
                    ~unjudged,
                )
                .values(status=str(ScanStatus.DONE), finished_at=dt.datetime.now(dt.UTC))
            ).rowcount
        return bool(done)

    # -- phase 1 -------------------------------------------------------------------------

    def begin_gather(self, scan_id: int, batch: int) -> list[tuple[str, int]]:
        """The batch's domains still to gather, each with its attempt number (this one)."""
        with self.engine.begin() as db:
            where = and_(
                ScanDomainRow.scan_id == scan_id,
                ScanDomainRow.batch == batch,
                ScanDomainRow.state == str(DomainState.PENDING),
            )
            db.execute(
                update(ScanDomainRow).where(where).values(attempts=ScanDomainRow.attempts + 1)
            )
            rows = db.execute(
                select(ScanDomainRow.domain, ScanDomainRow.attempts).where(where)
            ).all()
        return [(r.domain, r.attempts) for r in rows]

    def pending_batches(self, scan_id: int) -> list[int]:
        with self.engine.connect() as db:
            rows = db.execute(
                select(ScanDomainRow.batch)
                .where(
                    ScanDomainRow.scan_id == scan_id,
                    ScanDomainRow.state == str(DomainState.PENDING),
                )
                .distinct()
                .order_by(ScanDomainRow.batch)
            ).all()
        return [r.batch for r in rows]

    def save_gathered(
        self, scan_id: int, gathered: Sequence[Gathered], skipped: set[Pair]
    ) -> list[Pair]:
        """Store phase-1 facts and links; the pairs this call added (to be probed), in order."""
        links = [
            {"scan_id": scan_id, "domain": g.facts.domain, "host": h, "address": a}
            for g in gathered
            for h, a in g.pairs
        ]
        pairs: dict[Pair, None] = {}
        for g in gathered:
            pairs.update(dict.fromkeys(g.pairs))
        added: list[Pair] = []
        with self.engine.begin() as db:
            if gathered:
                db.execute(
                    _GATHERED,
                    [
                        {
                            "k_scan": scan_id,
                            "k_domain": g.facts.domain,
                            "v_facts": json.dumps(g.facts.to_dict()),
                            "v_provider": g.provider,
                            "v_error": g.error,
                        }
                        for g in gathered
                    ],
                )
            if links:
                db.execute(self._dialect.insert(ScanLinkRow).on_conflict_do_nothing(), links)
            rows = [
                {
                    "scan_id": scan_id,
                    "host": h,
                    "address": a,
                    "state": str(PairState.SKIPPED if (h, a) in skipped else PairState.PENDING),
                    "attempts": 0,
                }
                for h, a in pairs
            ]
            if rows:
                # executemany with RETURNING (SQLAlchemy's insertmanyvalues): one statement
                # per thousand rows, and only the rows this call inserted come back.
                result = db.execute(
                    self._dialect.insert(ScanPairRow)
                    .on_conflict_do_nothing()
                    .returning(ScanPairRow.host, ScanPairRow.address, ScanPairRow.state),
                    rows,
                )
                added += [(r.host, r.address) for r in result if r.state == str(PairState.PENDING)]
        order = {p: n for n, p in enumerate(pairs)}
        return sorted(added, key=lambda p: order[p])

    # -- phase 2 -------------------------------------------------------------------------

    def begin_probes(self, scan_id: int, pairs: Sequence[Pair]) -> list[tuple[Pair, int]]:
        """The pairs still to probe, each with its attempt number (this one). A probe job's
        pairs share one address: one cached statement per address, not one per call."""
        by_address: dict[str, list[str]] = {}
        for host, address in pairs:
            by_address.setdefault(address, []).append(host)
        found: list[tuple[Pair, int]] = []
        with self.engine.begin() as db:
            for address, hosts in by_address.items():
                for chunk in _chunks(hosts):
                    rows = db.execute(
                        _BEGIN_PROBES,
                        {"k_scan": scan_id, "k_address": address, "k_hosts": list(chunk)},
                    ).all()
                    found += [((r.host, r.address), r.attempts) for r in rows]
        return found

    def pending_pairs(self, scan_id: int) -> list[Pair]:
        with self.engine.connect() as db:
            rows = db.execute(
                select(ScanPairRow.host, ScanPairRow.address)
                .where(ScanPairRow.scan_id == scan_id, ScanPairRow.state == str(PairState.PENDING))
                .order_by(ScanPairRow.address, ScanPairRow.host)
            ).all()
        return [(r.host, r.address) for r in rows]

    def save_probes(
        self, scan_id: int, results: Sequence[tuple[Pair, list[dict[str, Any]], str | None]]
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        if not results:
            return
        with self.engine.begin() as db:
            db.execute(
                _PROBED,
                [
                    {
                        "k_scan": scan_id,
                        "k_host": host,
                        "k_address": address,
                        "v_probe": json.dumps(probes),
                        "v_error_kind": error_kind,
                        "v_at": now,
                    }
                    for (host, address), probes, error_kind in results
                ],
            )

    # -- judging -------------------------------------------------------------------------

    def ready(
        self,
        scan_id: int,
        domains: Sequence[str] | None = None,
        pairs: Sequence[Pair] | None = None,
    ) -> list[Ready]:
        """Gathered domains whose pairs are all probed, among ``domains`` and the domains that
        need any of ``pairs`` (every gathered one if neither), with their shared probes.

        Key lookups only, joined here rather than by the planner: while a scan runs its rows
        are newer than the table statistics, and a correlated NOT EXISTS planned on stale
        statistics turned into nested loops over every link of the scan (seconds per call)."""
        with self.engine.connect() as db:
            if domains is None and pairs is None:
                candidates = set(
                    db.execute(
                        select(ScanDomainRow.domain).where(
                            ScanDomainRow.scan_id == scan_id,
                            ScanDomainRow.state == str(DomainState.GATHERED),
                        )
                    ).scalars()
                )
            else:
                candidates = set(domains or ())
                for chunk in _chunks(list(pairs or ())):
                    candidates.update(
                        db.execute(
                            select(ScanLinkRow.domain).where(
                                ScanLinkRow.scan_id == scan_id,
                                tuple_(ScanLinkRow.host, ScanLinkRow.address).in_(list(chunk)),
                            )
                        ).scalars()
                    )
            facts: dict[str, str] = {}
            for chunk in _chunks(sorted(candidates)):
                for row in db.execute(
                    select(ScanDomainRow.domain, ScanDomainRow.facts).where(
                        ScanDomainRow.scan_id == scan_id,
                        ScanDomainRow.domain.in_(list(chunk)),
                        ScanDomainRow.state == str(DomainState.GATHERED),
                    )
                ):
                    if row.facts is not None:
                        facts[row.domain] = row.facts
            needs: dict[str, list[Pair]] = {d: [] for d in facts}
            for chunk in _chunks(sorted(facts)):
                for link in db.execute(
                    select(ScanLinkRow.domain, ScanLinkRow.host, ScanLinkRow.address).where(
                        ScanLinkRow.scan_id == scan_id, ScanLinkRow.domain.in_(list(chunk))
                    )
                ):
                    needs[link.domain].append((link.host, link.address))
            wanted = sorted({p for ps in needs.values() for p in ps})
            state: dict[Pair, tuple[str, str | None]] = {}
            for chunk in _chunks(wanted):
                for pair_row in db.execute(
                    select(
                        ScanPairRow.host, ScanPairRow.address, ScanPairRow.state, ScanPairRow.probe
                    ).where(
                        ScanPairRow.scan_id == scan_id,
                        tuple_(ScanPairRow.host, ScanPairRow.address).in_(list(chunk)),
                    )
                ):
                    state[(pair_row.host, pair_row.address)] = (pair_row.state, pair_row.probe)
        out = []
        for domain in sorted(facts):
            probes: dict[Pair, list[dict[str, Any]] | None] = {}
            for pair in needs[domain]:
                pair_state, probe = state.get(pair, (str(PairState.PENDING), None))
                if pair_state == str(PairState.PENDING):
                    break
                probes[pair] = (
                    json.loads(probe) if pair_state == str(PairState.DONE) and probe else None
                )
            else:
                out.append(Ready(domain, facts[domain], probes))
        return out

    def save_results(self, scan_id: int, judged: Sequence[Judged]) -> int:
        now = dt.datetime.now(dt.UTC)
        if not judged:
            return 0
        with self.engine.begin() as db:
            saved = db.execute(
                _JUDGED,
                [
                    {
                        "k_scan": scan_id,
                        "k_domain": j.domain,
                        "v_result": json.dumps(j.document),
                        "v_verdict": j.verdict,
                        "v_mode": j.mode,
                        "v_tlsrpt": j.tlsrpt,
                        "v_at": now,
                    }
                    for j in judged
                ],
            ).rowcount
        return int(saved)

    # -- reading -------------------------------------------------------------------------

    def progress(self, scan_id: int) -> Progress:
        minute_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        with self.engine.connect() as db:

            def counts(column: Any, *where: Any) -> Counter[str]:
                query = select(column, func.count()).where(*where).group_by(column)
                return Counter({str(value): int(n) for value, n in db.execute(query)})

            in_domains = ScanDomainRow.scan_id == scan_id
            in_pairs = ScanPairRow.scan_id == scan_id
            domains = counts(ScanDomainRow.state, in_domains)
            pairs = counts(ScanPairRow.state, in_pairs)
            kinds = counts(ScanPairRow.error_kind, in_pairs, ScanPairRow.error_kind.is_not(None))
            verdicts = counts(ScanDomainRow.verdict, in_domains, ScanDomainRow.verdict.is_not(None))
            linked = db.execute(
                select(func.count()).select_from(ScanLinkRow).where(ScanLinkRow.scan_id == scan_id)
            ).scalar_one()
            errors = db.execute(
                select(func.count())
                .select_from(ScanDomainRow)
                .where(ScanDomainRow.scan_id == scan_id, ScanDomainRow.error.is_not(None))
            ).scalar_one()
            recent = db.execute(
                select(func.count())
                .select_from(ScanDomainRow)
                .where(ScanDomainRow.scan_id == scan_id, ScanDomainRow.judged_at >= minute_ago)
            ).scalar_one()
            first, last = db.execute(
                select(func.min(ScanDomainRow.judged_at), func.max(ScanDomainRow.judged_at)).where(
                    ScanDomainRow.scan_id == scan_id
                )
            ).one()
        return Progress(
            domains, pairs, linked, kinds, errors, verdicts, recent, _utc(first), _utc(last)
        )

    def results(self, scan_id: int) -> Iterator[tuple[dict[str, Any], str | None]]:
        """(check --json document, provider) of each judged domain, by domain name."""
        with self.engine.connect() as db:
            rows = db.execute(
                select(ScanDomainRow.result, ScanDomainRow.provider)
                .where(
                    ScanDomainRow.scan_id == scan_id,
                    ScanDomainRow.state == str(DomainState.JUDGED),
                )
                .order_by(ScanDomainRow.domain)
                .execution_options(yield_per=1000)
            )
            for row in rows:
                if row.result:
                    yield json.loads(row.result), row.provider

    def delete(self, scan_id: int) -> None:
        with self.engine.begin() as db:
            for table in (ScanLinkRow, ScanPairRow, ScanDomainRow):
                db.execute(delete(table).where(table.scan_id == scan_id))
            db.execute(delete(ScanRow).where(ScanRow.id == scan_id))
