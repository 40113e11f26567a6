"""``mtasts scan``: adoption scans of very many domains over several workers (PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from mtasts.check.gather import CheckOptions
from mtasts.scan.plan import OptOut, PlanError, check_scan_name, in_shard
from mtasts.scan.polite import Limits

from .check import NETWORK_OPTIONS, _shard, domain_names, network_settings, read_domain_file
from .output import EXIT_PROBLEMS, EXIT_USAGE, csv_cell, echo, print_json

_DB = click.option(
    "--db",
    envvar="MTASTS_DB",
    help="PostgreSQL URL of the scan database (shared by every worker); or MTASTS_DB.",
)


def _open(db: str | None) -> tuple[Any, Any]:
    """(ScanStore, ProcrastinateEngine) for ``db``; exit 2 in one line when it is not PostgreSQL."""
    from sqlalchemy.exc import SQLAlchemyError

    from mtasts.reports.store import default_url, open_store, store_error
    from mtasts.scan.engine import ProcrastinateEngine
    from mtasts.scan.store import ScanStore

    url = db or default_url()
    if not url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        echo(
            "error: mtasts scan needs PostgreSQL, shared by its workers: give --db"
            " postgresql://USER@HOST/DB or set MTASTS_DB (for one machine without a database,"
            " use `mtasts check --file`)",
            fg="red",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    url = url.replace("postgres://", "postgresql://", 1)
    try:
        store = ScanStore(open_store(url).engine)
    except SQLAlchemyError as exc:
        echo(f"error: {store_error(exc)}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    return store, ProcrastinateEngine.for_url(url)


def _scans(store: Any, *names: str) -> list[Any]:
    """The scans named (all of them when none is), or exit 2 naming the one missing."""
    from mtasts.scan.store import ScanError

    try:
        return [store.get(n) for n in names] if names else list(store.scans())
    except ScanError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)


def _quiet_engine(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not verbose:
        logging.getLogger("procrastinate").setLevel(logging.WARNING)


@click.group()
def scan() -> None:
    """Adoption scans of many domains over several workers, stored in PostgreSQL.

    \b
    mtasts scan submit top-1m.txt --name 2026-12
    mtasts scan worker --concurrency 32     # on each machine
    mtasts scan status 2026-12
    mtasts scan results 2026-12 --stats
    mtasts scan diff 2026-11 2026-12
    """


@scan.command("submit")
@click.argument("domain_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The scan's name (letters, digits, - _ .).")
@click.option(
    "--opt-out",
    "opt_out_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Domains, MX hosts (*.provider.example) and addresses/networks never to contact.",
)
@click.option("--shard", callback=_shard, metavar="K/N", help="Submit only shard K of N.")
@NETWORK_OPTIONS
@click.option(
    "--per-address",
    type=click.IntRange(1, 100),
    default=2,
    show_default=True,
    help="Probes open at once to one MX address, across all workers.",
)
@click.option(
    "--address-rate",
    type=click.FloatRange(0, 1000),
    default=5.0,
    show_default=True,
    help="Probes started per second per MX address, across all workers (0: no limit).",
)
@click.option(
    "--per-provider",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Probes open at once to one provider's MX hosts (by MX host domain).",
)
@click.option(
    "--provider-rate",
    type=click.FloatRange(0, 10000),
    default=0.0,
    show_default=True,
    help="Probes started per second per provider (0: no limit).",
)
@click.option("--batch-size", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--ehlo", help="EHLO name (default: NAME.mtasts-scan.invalid).")
@click.option("--source", "source_address", help="Local address to probe from.")
@_DB
def scan_submit(
    domain_file: Path,
    name: str,
    opt_out_file: Path | None,
    shard: tuple[int, int] | None,
    nameservers: tuple[str, ...],
    ca_file: Path | None,
    smtp_port: int,
    https_port: int,
    timeout: float,
    probes: int,
    max_mx: int,
    max_addresses: int,
    lab_dir: Path | None,
    per_address: int,
    address_rate: float,
    per_provider: int,
    provider_rate: float,
    batch_size: int,
    ehlo: str | None,
    source_address: str | None,
    db: str | None,
) -> None:
    """Queue a scan of the domains in DOMAIN_FILE (one per line, '#' comments)."""
    from mtasts.scan.store import ScanError
    from mtasts.scan.work import ScanOptions

    try:
        check_scan_name(name)
    except PlanError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    names, problems = domain_names(read_domain_file(domain_file))
    for problem in problems:  # the rest of the list goes on
        echo(problem, fg="red", err=True)
    if shard is not None:
        names = [n for n in names if in_shard(n, *shard)]
    opt_out_entries: list[str] = []
    opted_out = 0
    if opt_out_file is not None:
        lines = read_domain_file(opt_out_file)
        opt_out, bad = OptOut.parse(lines)
        for line in bad:
            echo(f"error: {line}", fg="red", err=True)
        opt_out_entries = [text.split("#", 1)[0].strip() for text, _ in lines]
        kept = [n for n in names if not opt_out.domain(n)]
        opted_out, names = len(names) - len(kept), kept
    if not names:
        echo(f"error: {domain_file}: no domain to scan", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    settings = network_settings(nameservers, ca_file, smtp_port, https_port, lab_dir)
    scan_options = ScanOptions(
        CheckOptions(
            timeout=timeout, probes=probes, max_mx=max_mx, max_addresses=max_addresses, **settings
        ),
        Limits(per_address, address_rate, per_provider, provider_rate),
        batch_size=batch_size,
        ehlo=ehlo,
        source=source_address,
        opt_out=tuple(e for e in opt_out_entries if e),
    )
    store, engine = _open(db)

    async def submit() -> int:
        await engine.ensure_schema()
        info = store.create(name, names, scan_options.to_dict(), batch_size, opted_out)
        async with engine.open():
            return int(await engine.defer_gather(name, range(info.batches)))

    try:
        jobs = asyncio.run(submit())
    except ScanError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    skipped = f", {opted_out:,} opted out" if opted_out else ""
    echo(f"scan {name}: {len(names):,} domains in {jobs:,} batches queued{skipped}")
    echo(f"run `mtasts scan worker` on each machine; `mtasts scan status {name}` shows progress")


@scan.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=32,
    show_default=True,
    help="Probes at once in this process (phase 2: one connection each).",
)
@click.option(
    "--batches",
    type=click.IntRange(1, 100),
    default=2,
    show_default=True,
    help="Phase-1 batches at once in this process (each resolves its domains together).",
)
@click.option("--once", is_flag=True, help="Exit when no scan has work left (batch jobs).")
@click.option(
    "--stalled-after",
    type=click.FloatRange(1, 3600),
    default=30.0,
    show_default=True,
    help="Seconds without a heartbeat after which a worker's jobs are given to others.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every job.")
@_DB
def scan_worker(
    concurrency: int, batches: int, once: bool, stalled_after: float, verbose: bool, db: str | None
) -> None:
    """Run scan jobs from the queue until interrupted (or, with --once, until none is left)."""
    from mtasts.scan.engine import conninfo_of
    from mtasts.scan.polite import PgPoliteness
    from mtasts.scan.work import Runtime

    _quiet_engine(verbose)
    store, engine = _open(db)

    async def work() -> None:
        await engine.ensure_schema()
        politeness = PgPoliteness(
            conninfo_of(store.engine.url.render_as_string(hide_password=False))
        )
        runtime = Runtime(store, engine.defer_probes, politeness)
        await politeness.open()
        try:
            async with engine.open():
                await engine.run_worker(runtime, concurrency, once, stalled_after, batches=batches)
        finally:
            await politeness.close()

    # Like check, a scan worker spends its CPU in TLS handshakes and the event loop's
    # transports: uvloop (mtasts[fast]) runs those in C.
    from mtasts.net.loop import run

    run(work())


def _rate(progress: Any) -> float | None:
    """Domains judged per second over the last minute, or since the first judgement when
    that is more recent (a scan 20 s old has not had a whole minute)."""
    if not progress.judged_last_minute or progress.first_judged is None:
        return None
    since = float((dt.datetime.now(dt.UTC) - progress.first_judged).total_seconds())
    return float(progress.judged_last_minute) / min(60.0, max(1.0, since))


def _status_dict(info: Any, progress: Any, jobs: dict[str, int]) -> dict[str, Any]:
    total = info.domains
    judged = progress.domains.get("judged", 0)
    probed = progress.pairs.get("done", 0)
    pairs = sum(progress.pairs.values())
    elapsed = None
    if progress.first_judged and progress.last_judged:
        end = info.finished_at or progress.last_judged
        elapsed = max((end - info.created_at).total_seconds(), 0.001)
    recent = _rate(progress)
    overall = judged / elapsed if elapsed and judged else None
    rate = recent or overall
    left = total - judged
    return {
        "name": info.name,
        "status": str(info.status),
        "created_at": info.created_at.isoformat(),
        "finished_at": info.finished_at.isoformat() if info.finished_at else None,
        "domains": total,
        "opted_out": info.opted_out,
        "gathered": total - progress.domains.get("pending", 0),
        "judged": judged,
        "pairs": pairs,
        "pairs_probed": probed,
        "pairs_skipped": progress.pairs.get("skipped", 0),
        "per_domain_probes": progress.linked,
        "domains_per_second": round(rate, 2) if rate else None,
        "eta_seconds": round(left / rate)
        if rate and left and str(info.status) == "running"
        else None,
        "jobs": jobs,
        "probe_errors": dict(progress.error_kinds.most_common()),
        "gather_errors": progress.gather_errors,
        "verdicts": dict(progress.verdicts.most_common()),
    }


def _print_status(s: dict[str, Any]) -> None:
    total = s["domains"] or 1
    echo(
        f"scan {s['name']}: {s['status']}, {s['judged']:,} of {s['domains']:,} domains judged"
        f" ({100 * s['judged'] // total}%)",
        bold=True,
    )
    saved = ""
    if s["pairs"] and s["per_domain_probes"]:
        saved = (
            f" (a check per domain would probe {s['per_domain_probes']:,}:"
            f" {s['per_domain_probes'] / s['pairs']:.1f}x more)"
        )
    echo(f"  phase 1   {s['gathered']:,} domains gathered")
    echo(f"  phase 2   {s['pairs_probed']:,} of {s['pairs']:,} MX host/address pairs probed{saved}")
    if s["pairs_skipped"] or s["opted_out"]:
        echo(f"  opt-out   {s['opted_out']:,} domains, {s['pairs_skipped']:,} pairs not contacted")
    if s["domains_per_second"]:
        eta = f", about {dt.timedelta(seconds=s['eta_seconds'])} left" if s["eta_seconds"] else ""
        echo(f"  rate      {s['domains_per_second']:,} domains/s{eta}")
    jobs = s["jobs"]
    if jobs:
        echo("  jobs      " + ", ".join(f"{k} {v:,}" for k, v in jobs.items() if v))
    errors = ", ".join(f"{k} {v:,}" for k, v in s["probe_errors"].items())
    echo(f"  errors    probes: {errors or 'none'}; gathering gave up: {s['gather_errors']:,}")
    if s["verdicts"]:
        echo("  verdicts  " + ", ".join(f"{k} {v:,}" for k, v in s["verdicts"].items()))


@scan.command("status")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@_DB
def scan_status(name: str | None, as_json: bool, db: str | None) -> None:
    """Progress, rate, ETA and errors of scan NAME (every scan without NAME)."""

    store, engine = _open(db)
    infos = _scans(store, name) if name else _scans(store)

    async def jobs() -> list[dict[str, int]]:
        await engine.ensure_schema()
        async with engine.open():
            return [await engine.jobs(i.name) for i in infos]

    counts = asyncio.run(jobs())
    statuses = [
        _status_dict(i, store.progress(i.id), c) for i, c in zip(infos, counts, strict=True)
    ]
    if as_json:
        print_json(statuses if not name else statuses[0])
        return
    if not statuses:
        echo("no scans yet: `mtasts scan submit FILE --name NAME`")
    for status in statuses:
        _print_status(status)


@scan.command("results")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One check --json document per line.")
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Adoption CSV."
)
@click.option("--stats", "as_stats", is_flag=True, help="Adoption statistics (with --json: JSON).")
@_DB
def scan_results(
    name: str, as_json: bool, csv_path: Path | None, as_stats: bool, db: str | None
) -> None:
    """The results of scan NAME: per domain (--json, --csv) or as statistics (default)."""
    from mtasts.check.report import ADOPTION_FIELDS
    from mtasts.scan.stats import adoption

    store, _ = _open(db)
    (info,) = _scans(store, name)
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=[*ADOPTION_FIELDS, "provider"])
            writer.writeheader()
            for doc, provider in store.results(info.id):
                row = dict(doc.get("summary") or {})
                row["provider"] = provider
                writer.writerow({k: csv_cell(v) for k, v in row.items()})
    if as_json and not as_stats:
        for doc, _provider in store.results(info.id):
            click.echo(json.dumps(doc))
        return
    if csv_path is not None and not as_stats:
        return
    totals = adoption(store.results(info.id)).to_dict()
    if as_json:
        print_json(totals)
        return
    _print_adoption(name, totals)


def _share(count: int, total: int) -> str:
    return f"{count:,} ({100 * count / total:.1f}%)" if total else "0"


def _print_adoption(name: str, t: dict[str, Any]) -> None:
    n = t["domains"]
    echo(f"scan {name}: {n:,} domains judged", bold=True)
    modes = dict(t["mta_sts"])
    # check's adoption modes: "broken" is a record published with no usable policy, "none"
    # no record or a mode:none policy; anything else a document carried comes last.
    shown_modes = ["enforce", "testing", "broken", "none"]
    shown_modes += sorted(m for m in modes if m not in shown_modes)
    echo("  MTA-STS   " + ", ".join(f"{m} {_share(modes.get(m, 0), n)}" for m in shown_modes))
    echo(f"  TLS-RPT   {_share(t['tlsrpt'], n)}")
    echo("  verdicts  " + ", ".join(f"{k} {v:,}" for k, v in t["verdicts"].items()))
    if t["failures"]:
        echo("  failures  " + ", ".join(f"{k} {v:,}" for k, v in t["failures"].items()))
    if t["top_providers"]:
        echo("  top providers (by the most preferred MX):")
        for provider, p in t["top_providers"].items():
            pm = p["mta_sts"]
            echo(
                f"    {provider:<32} {p['domains']:>7,} domains, enforce {pm.get('enforce', 0):,},"
                f" testing {pm.get('testing', 0):,}, broken {pm.get('broken', 0):,},"
                f" TLS-RPT {p['tlsrpt']:,}"
            )


@scan.command("diff")
@click.argument("first")
@click.argument("second")
@click.option("--json", "as_json", is_flag=True)
@_DB
def scan_diff(first: str, second: str, as_json: bool, db: str | None) -> None:
    """What changed from scan FIRST to scan SECOND: adopted, dropped, downgraded, newly broken."""
    from mtasts.scan.stats import diff

    store, _ = _open(db)
    a, b = _scans(store, first, second)
    before = {doc["domain"]: doc for doc, _ in store.results(a.id)}
    after = {doc["domain"]: doc for doc, _ in store.results(b.id)}
    result = diff(before, after).to_dict()
    if as_json:
        print_json(result)
        return
    echo(f"{first} -> {second}: {len(before):,} and {len(after):,} domains", bold=True)
    for key, title in (
        ("adopted", "adopted MTA-STS"),
        ("dropped", "dropped MTA-STS"),
        ("downgraded", "downgraded (enforce -> testing or none)"),
        ("upgraded", "upgraded to enforce"),
        ("newly_broken", "newly broken"),
        ("fixed", "fixed"),
    ):
        items = result[key]
        echo(f"  {title}: {len(items):,}")
        for domain in list(items)[:20]:
            extra = f"  {', '.join(items[domain])}" if isinstance(items, dict) else ""
            echo(f"    {domain}{extra}")
        if len(items) > 20:
            echo(f"    ... and {len(items) - 20:,} more (--json lists all)")
    if result["only_in_first"] or result["only_in_second"]:
        echo(
            f"  only in {first}: {len(result['only_in_first']):,};"
            f" only in {second}: {len(result['only_in_second']):,}"
        )


@scan.command("cancel")
@click.argument("name")
@_DB
def scan_cancel(name: str, db: str | None) -> None:
    """Stop scan NAME: its queued jobs are cancelled, running ones stop at their next step."""
    from mtasts.scan.store import ScanStatus

    store, engine = _open(db)
    (info,) = _scans(store, name)
    if info.status is ScanStatus.DONE:
        echo(f"scan {name} is already done")
        sys.exit(EXIT_PROBLEMS)
    store.set_status(info.id, ScanStatus.CANCELLED)

    async def cancel() -> int:
        await engine.ensure_schema()
        async with engine.open():
            return int(await engine.cancel(name))

    jobs = asyncio.run(cancel())
    echo(
        f"scan {name} cancelled: {jobs:,} queued jobs dropped; `mtasts scan resume {name}` goes on"
    )


@scan.command("resume")
@click.argument("name")
@_DB
def scan_resume(name: str, db: str | None) -> None:
    """Queue again what scan NAME has not done (after cancel, or a database restored)."""
    from mtasts.scan.plan import probe_jobs
    from mtasts.scan.store import ScanStatus
    from mtasts.scan.work import ScanOptions

    store, engine = _open(db)
    (info,) = _scans(store, name)
    if info.status is ScanStatus.DONE:
        echo(f"scan {name} is already done")
        return
    options = ScanOptions.from_dict(info.options)
    store.set_status(info.id, ScanStatus.RUNNING)
    pending = store.pending_batches(info.id)
    pairs = store.pending_pairs(info.id)

    async def resume() -> None:
        await engine.ensure_schema()
        async with engine.open():
            await engine.defer_gather(name, pending)
            jobs = probe_jobs(pairs, options.probe_group, options.limits.per_address)
            await engine.defer_probes(name, jobs)

    asyncio.run(resume())
    echo(f"scan {name} resumed: {len(pending):,} batches and {len(pairs):,} probes queued again")


__all__ = ["scan"]
