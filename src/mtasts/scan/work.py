"""What a scan job does, whatever engine ran it: gather a batch of domains (phase 1), probe
a group of (MX host, address) pairs (phase 2), and judge every domain whose probes are in.

Each step reads what is still to do from the store first, so a job delivered twice, or
retried after its worker was killed, redoes only what was not stored; and it gives up on
a domain or pair after ``max_attempts`` (a batch that kills its worker every time must
not stall the scan for ever), storing why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtasts.check.checker import gather_many
from mtasts.check.facts import DomainFacts, TxtFacts, probe_from_dict, probe_to_dict
from mtasts.check.gather import CheckOptions
from mtasts.check.judge import judge
from mtasts.check.report import to_json
from mtasts.net.dns import Nameserver
from mtasts.net.smtp import SmtpProbe, probe_mx

from .plan import OptOut, Pair, ProbeJob, ehlo_name, pairs_of, probe_jobs, provider_of, with_probes
from .polite import Limits, LocalPoliteness, Politeness
from .store import Gathered, Judged, Ready, ScanInfo, ScanStatus, ScanStore

log = logging.getLogger("mtasts.scan")

DeferProbes = Callable[[str, list[ProbeJob]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """Everything a worker needs to run a scan's jobs; stored with the scan as JSON."""

    check: CheckOptions = field(default_factory=CheckOptions)
    limits: Limits = field(default_factory=Limits)
    batch_size: int = 50  # domains per phase-1 job
    probe_group: int = 8  # pairs per phase-2 job
    ehlo: str | None = None  # default: the scan's name under .mtasts-scan.invalid
    source: str | None = None  # local address to probe from
    max_attempts: int = 3
    opt_out: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        c = self.check
        return {
            "nameservers": [
                f"[{n.address}]:{n.port}" if ":" in n.address else f"{n.address}:{n.port}"
                for n in c.nameservers
            ],
            "ca_file": str(c.ca_file) if c.ca_file else None,
            "smtp_port": c.smtp_port,
            "https_port": c.https_port,
            "timeout": c.timeout,
            "probes": c.probes,
            "max_mx": c.max_mx,
            "max_addresses": c.max_addresses,
            "limits": self.limits.to_dict(),
            "batch_size": self.batch_size,
            "probe_group": self.probe_group,
            "ehlo": self.ehlo,
            "source": self.source,
            "max_attempts": self.max_attempts,
            "opt_out": list(self.opt_out),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScanOptions:
        check = CheckOptions(
            nameservers=tuple(Nameserver.parse(n) for n in raw.get("nameservers", ())),
            ca_file=Path(raw["ca_file"]) if raw.get("ca_file") else None,
            smtp_port=int(raw.get("smtp_port", 25)),
            https_port=int(raw.get("https_port", 443)),
            timeout=float(raw.get("timeout", 10.0)),
            probes=int(raw.get("probes", 1)),
            max_mx=int(raw.get("max_mx", 16)),
            max_addresses=int(raw.get("max_addresses", 8)),
        )
        return cls(
            check,
            Limits.from_dict(raw.get("limits", {})),
            int(raw.get("batch_size", 50)),
            int(raw.get("probe_group", 8)),
            raw.get("ehlo"),
            raw.get("source"),
            int(raw.get("max_attempts", 3)),
            tuple(raw.get("opt_out", ())),
        )


_STATUS_FRESH = 2.0  # seconds a scan's status is reused: a cancel takes effect within it


@dataclass
class Runtime:
    """One worker process's view: the store, its politeness and how to defer phase 2.

    Probe jobs leave the pairs they stored in ``probed``; the worker judges the domains
    those completed in one pass per tick (:func:`judge_probed`) instead of one per job: a
    job probes one or two pairs, and judging after each cost more database round trips
    than the probes themselves."""

    store: ScanStore
    defer_probes: DeferProbes
    politeness: Politeness = field(default_factory=LocalPoliteness)
    _scans: dict[str, tuple[ScanInfo, ScanOptions, OptOut]] = field(default_factory=dict)
    _read_at: dict[str, float] = field(default_factory=dict)
    probed: dict[str, set[Pair]] = field(default_factory=dict)

    def scan(self, name: str) -> tuple[ScanInfo, ScanOptions, OptOut]:
        """The scan's settings (cached: they never change) and its status (read again after
        a couple of seconds: a cancelled scan's remaining jobs must stop)."""
        now = time.monotonic()
        if name not in self._scans or now - self._read_at.get(name, 0.0) > _STATUS_FRESH:
            fresh = self.store.get(name)
            self._read_at[name] = now
            if name in self._scans:
                _, options, opt_out = self._scans[name]
            else:
                options = ScanOptions.from_dict(fresh.options)
                opt_out, _ = OptOut.parse((e, "opt-out") for e in options.opt_out)
            self._scans[name] = (fresh, options, opt_out)
        return self._scans[name]


def _gave_up(domain: str, attempts: int) -> DomainFacts:
    return DomainFacts(
        domain,
        dt.datetime.now(dt.UTC),
        TxtFacts(),
        TxtFacts(),
        gather_error=f"gave up after {attempts - 1} attempts: the worker stopped each time",
    )


def gather_deadline(options: ScanOptions) -> float:
    """Seconds a phase-1 job may take before it counts as hung: a domain's steps (TXT, MX,
    addresses, policy fetch, each bounded by the timeout) run one after another."""
    return 60.0 + 8 * options.check.timeout


def probe_deadline(options: ScanOptions) -> float:
    """Seconds one pair's probes may take once its politeness slot is held (waiting for a
    slot is politeness, not a hang, and does not count): each probe is at most two
    connections (a second look at a certificate that failed), each bounded by the timeout."""
    return 30.0 + options.check.probes * 2 * options.check.timeout


async def gather_batch(rt: Runtime, scan: str, batch: int) -> int:
    """Phase 1 for one batch; defers probes for the pairs no earlier batch added. Returns
    the number of domains gathered.

    A job that outlives :func:`gather_deadline` raises TimeoutError: the engine retries it
    (what was stored stays) instead of letting a hung job hold a worker's slot for ever."""
    info, options, opt_out = rt.scan(scan)
    if info.status is not ScanStatus.RUNNING:
        return 0
    async with asyncio.timeout(gather_deadline(options)):
        todo = await asyncio.to_thread(rt.store.begin_gather, info.id, batch)
        fresh = [d for d, attempts in todo if attempts <= options.max_attempts]
        facts = [_gave_up(d, a) for d, a in todo if a > options.max_attempts]
        if fresh:
            facts += await gather_many(fresh, options.check, len(fresh), probe_smtp=False)
        gathered = []
        for f in facts:
            pairs = pairs_of(f)
            gathered.append(
                Gathered(f, pairs, provider_of(f.mx[0].host) if f.mx else None, f.gather_error)
            )
        skipped = {p for g in gathered for p in g.pairs if opt_out.pair(p)}
        added = await asyncio.to_thread(rt.store.save_gathered, info.id, gathered, skipped)
        if added:
            jobs = probe_jobs(added, options.probe_group, options.limits.per_address)
            await rt.defer_probes(scan, jobs)
        await judge_ready(rt, info, domains=[f.domain for f in facts])
    return len(facts)


async def _probe(
    pair: Pair, attempts: int, options: ScanOptions, politeness: Politeness, helo: str
) -> tuple[Pair, list[dict[str, Any]], str | None]:
    host, address = pair
    check = options.check
    if attempts > options.max_attempts:
        gave_up = SmtpProbe(
            host,
            address,
            check.smtp_port,
            error_kind="gave-up",
            error=f"not probed: gave up after {attempts - 1} attempts (the worker stopped each time)",
        )
        return pair, [probe_to_dict(gave_up)], gave_up.error_kind
    probes = []
    async with politeness.slot(pair, options.limits), asyncio.timeout(probe_deadline(options)):
        for _ in range(check.probes):
            probes.append(
                await probe_mx(
                    host,
                    address,
                    port=check.smtp_port,
                    ca_file=check.ca_file,
                    timeout=check.timeout,
                    helo=helo,
                    source=options.source,
                )
            )
    return pair, [probe_to_dict(p) for p in probes], probes[-1].error_kind


async def probe_group(rt: Runtime, scan: str, pairs: Sequence[Pair]) -> int:
    """Phase 2 for a job's pairs (one address, see :func:`.plan.probe_jobs`): probed one
    after another, so a job holds at most one connection and the engine's job key caps
    the address's connections. Returns the number of pairs probed; the domains they
    complete are judged by :func:`judge_probed`. Each pair is bounded by
    :func:`probe_deadline`: one that outlives it raises TimeoutError and the engine
    retries the job, as for :func:`gather_batch`."""
    info, options, _ = rt.scan(scan)
    if info.status is not ScanStatus.RUNNING:
        return 0
    todo = await asyncio.to_thread(rt.store.begin_probes, info.id, list(pairs))
    helo = options.ehlo or ehlo_name(info.name)
    results = []
    for pair, attempts in todo:
        results.append(await _probe(pair, attempts, options, rt.politeness, helo))
    await asyncio.to_thread(rt.store.save_probes, info.id, results)
    rt.probed.setdefault(scan, set()).update(pair for pair, _, _ in results)
    return len(results)


def judge_stored(ready: Sequence[Ready]) -> list[Judged]:
    """Judge gathered domains from their stored facts and the shared probes."""
    judged = []
    for item in ready:
        facts = DomainFacts.from_dict(json.loads(item.facts))
        shared = {
            pair: None if raw is None else [probe_from_dict(p) for p in raw]
            for pair, raw in item.probes.items()
        }
        check = judge(with_probes(facts, shared))
        judged.append(
            Judged(
                item.domain,
                to_json(check),
                str(check.verdict),
                check.mode,
                check.tlsrpt_record is not None,
            )
        )
    return judged


async def judge_ready(
    rt: Runtime,
    info: ScanInfo,
    domains: Sequence[str] | None = None,
    pairs: Sequence[Pair] | None = None,
) -> int:
    """Judge the domains (among those named or needing ``pairs``) whose probes are all in.

    Two jobs finishing at once may both judge a domain: judging is pure and the second
    store is a no-op, so nothing is lost or doubled. The sweep (no arguments) catches any
    domain left gathered with all its probes in."""

    def run() -> int:
        ready = rt.store.ready(info.id, domains, pairs)
        if not ready:
            return 0
        saved = rt.store.save_results(info.id, judge_stored(ready))
        rt.store.finish_if_done(info.id)
        return saved

    return await asyncio.to_thread(run)


async def judge_probed(rt: Runtime) -> int:
    """Judge the domains completed by the pairs this worker stored since the last call.

    A worker killed before this runs leaves those domains gathered with every probe in;
    the idle sweep (:func:`judge_ready` with no arguments) judges them."""
    judged = 0
    while rt.probed:
        scan, pairs = rt.probed.popitem()
        info, _, _ = rt.scan(scan)
        try:
            judged += await judge_ready(rt, info, pairs=sorted(pairs))
        except Exception:
            rt.probed.setdefault(scan, set()).update(pairs)  # the next tick tries again
            raise
    return judged
