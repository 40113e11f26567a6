"""``mtasts reports``: ingest TLS-RPT reports and look after the quarantine."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import click
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from mtasts.files import masked
from mtasts.net.dns import Nameserver
from mtasts.reports.analysis import (
    LARGE_SENDERS,
    DomainRow,
    MxRow,
    Readiness,
    SummaryRow,
    domains_reported,
    readiness,
    sender_names,
    summary,
    summary_by_domain,
    summary_by_mx,
)
from mtasts.reports.imap import ImapError, ImapSource, ingest_imap
from mtasts.reports.imap import watch as imap_watch
from mtasts.reports.ingest import (
    DEFAULT_BATCH,
    Batch,
    IngestResult,
    default_workers,
    ingest_maildir,
    ingest_mbox,
    ingest_path,
    retry_quarantined,
    watch_maildir,
)
from mtasts.reports.provenance import Channel, DkimVerifier
from mtasts.reports.store import Outcome, ReportStore, default_url, open_store, store_error
from mtasts.reports.verdict import Verdict
from mtasts.sts.domain import normalise_host
from mtasts.tlsrpt.parse import DEFAULT_MAX_SIZE

from .output import EXIT_USAGE, console, csv_cell, echo, print_json, print_table, shown

db_option = click.option(
    "--db", envvar="MTASTS_DB", help="SQLAlchemy URL (default: a SQLite file in your data folder)."
)


FC = TypeVar("FC", bound=Callable[..., object])
# Submitter keys (lower case) to the organization names reports wrote, for the tables.
_NAMES: dict[str, str] = {}
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _byte_size(_ctx: click.Context, param: click.Parameter, value: str) -> int:
    """``20M``, ``512K`` or a number of bytes."""
    text = value.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
    number = text.removesuffix(unit) if unit else text
    if not number.isdigit() or int(number) < 1:
        raise click.BadParameter(f"{value!r}: use a number of bytes, or one with K, M or G (20M)")
    return int(number) * _UNITS[unit]


def byte_size_option(default: str, help_text: str) -> Callable[[FC], FC]:
    """``--max-report-size`` with its own default: the HTTPS rua takes less than a mailbox."""
    return click.option(
        "--max-report-size",
        "max_report",
        metavar="SIZE",
        default=default,
        callback=_byte_size,
        help=help_text,
        show_default=True,
    )


max_report_option = byte_size_option(
    f"{DEFAULT_MAX_SIZE // 1024**2}M",
    "Largest report accepted, also after decompression (gzip bombs stop here).",
)


EX_TEMPFAIL = 75  # sysexits.h: Postfix's pipe(8) defers the mail and retries, never bounces


def open_report_store(db: str | None, exit_code: int = EXIT_USAGE) -> ReportStore:
    """The store at ``db`` (or the default), or one line saying why it cannot be opened."""
    url = db or default_url()
    try:
        return open_store(url)
    except Exception as exc:  # a wrong URL or an unreachable server: say which, in one line
        echo(
            masked(url, f"error: cannot open the report store {url}: {exc}").splitlines()[0],
            fg="red",
            err=True,
        )
        sys.exit(exit_code)


@click.group()
def reports() -> None:
    """TLS-RPT reports (RFC 8460): ingest them, keep every raw report, quarantine what cannot be read."""


@reports.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, allow_dash=True, path_type=Path))
@click.option(
    "--maildir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="A Maildir: processed messages move to .Processed, failed ones to .Failed.",
)
@click.option("--mbox", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True)
@click.option(
    "--imap-url",
    help="imaps://user@host[:port]/FOLDER; password from MTASTS_IMAP_PASSWORD or --imap-password-file.",
)
@click.option("--imap-password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--imap-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Log in with OAuth 2.0 (SASL XOAUTH2) using the access token in this file, read at each login.",
)
@click.option(
    "--imap-ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CA to trust for the IMAP server, in addition to the system's.",
)
@click.option(
    "--imap-processed",
    default="Processed",
    show_default=True,
    help="IMAP folder for messages whose reports are stored (created if missing).",
)
@click.option(
    "--imap-failed",
    default="Failed",
    show_default=True,
    help="IMAP folder for messages with a quarantined report (created if missing).",
)
@click.option(
    "--watch",
    is_flag=True,
    help="With --imap-url (woken by IMAP IDLE when the server has it) or one --maildir: keep reading it.",
)
@click.option(
    "--interval",
    type=click.FloatRange(1, 1740),  # RFC 2177: re-issue IDLE at least every 29 minutes
    default=60,
    show_default=True,
    help="Most seconds between --watch rounds.",
)
@click.option(
    "--batch",
    "batch_size",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Reports per database transaction; messages move only after theirs commits.",
)
@click.option(
    "--dkim/--no-dkim",
    default=True,
    show_default=True,
    help="Verify report mail's DKIM signature (RFC 8460 §3) against DNS; readiness trusts only verified senders.",
)
@click.option(
    "--nameserver",
    "nameservers",
    metavar="HOST[:PORT]",
    multiple=True,
    help="DNS server for the DKIM keys, instead of the system's (repeatable).",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    help="Processes reading reports (MIME, gzip, JSON, DKIM) while this one stores; default one"
    " per core (at most 8), started only for more than a few dozen inputs. Not with --imap-url.",
)
@max_report_option
@db_option
@click.option("--json", "as_json", is_flag=True, help="The counts as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Name every skipped input and why.")
def ingest(
    paths: tuple[Path, ...],
    maildir: tuple[Path, ...],
    mbox: tuple[Path, ...],
    imap_url: str | None,
    imap_password_file: Path | None,
    imap_token_file: Path | None,
    imap_ca_file: Path | None,
    imap_processed: str,
    imap_failed: str,
    watch: bool,
    interval: float,
    batch_size: int,
    dkim: bool,
    nameservers: tuple[str, ...],
    jobs: int | None,
    max_report: int,
    db: str | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Store reports from files, folders, zips, mail files, Maildirs, mboxes or '-' (one message on stdin).

    Exits 0 whenever every input was kept (stored, duplicate or quarantined), so
    Postfix's pipe transport never bounces a report mail; with '-', a store that cannot
    be reached exits 75 (EX_TEMPFAIL), so Postfix defers the mail and tries again.
    """
    if not (paths or maildir or mbox or imap_url):
        raise click.UsageError("give PATHS, '-', --maildir, --mbox or --imap-url")
    if watch and (paths or mbox or len(maildir) + bool(imap_url) != 1):
        raise click.UsageError(
            "--watch reads one mailbox: give --imap-url or one --maildir, nothing else"
        )
    source = None
    if imap_url:
        password = (
            imap_password_file.read_text().strip()
            if imap_password_file
            else os.environ.get("MTASTS_IMAP_PASSWORD", "")
        )
        try:
            source = ImapSource.parse(imap_url, password, imap_ca_file)
            source = dataclasses.replace(
                source, processed=imap_processed, failed=imap_failed, token_file=imap_token_file
            )
        except ImapError as exc:
            raise click.BadParameter(str(exc), param_hint="--imap-url") from None
    try:
        servers = tuple(Nameserver.parse(n) for n in nameservers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nameserver") from None
    verifier = DkimVerifier(servers) if dkim else None
    # A report mail piped in by Postfix must be deferred, not bounced, while the store is down.
    piped = any(str(p) == "-" for p in paths)
    store = open_report_store(db, EX_TEMPFAIL if piped else EXIT_USAGE)
    if source is not None and watch:
        echo(
            f"watching {imap_url}, at most {interval:g} s between rounds (Ctrl-C to stop)", err=True
        )
        try:
            imap_watch(store, source, interval, _log_round, batch_size, max_report, verifier)
        except KeyboardInterrupt:
            return
    if watch:
        echo(f"watching {maildir[0]} every {interval:g} s (Ctrl-C to stop)", err=True)
        try:
            watch_maildir(store, maildir[0], interval, _log_round, batch_size, max_report, verifier)
        except KeyboardInterrupt:
            return
    result = IngestResult()
    # IMAP leaves unrelated mail in place, which it must know at once, and a piped mail is
    # one message: both read in-process.
    workers = 1 if source is not None or piped else jobs or default_workers()
    try:
        with Batch(
            store, result, batch_size, max_report, verifier=verifier, workers=workers
        ) as batch:
            if source is not None:
                ingest_imap(batch, source)
            for path in paths:
                if str(path) == "-":
                    batch.add(sys.stdin.buffer.read(), "<stdin>", channel=Channel.STDIN)
                else:
                    ingest_path(batch, path)
            for folder in maildir:
                ingest_maildir(batch, folder)
            for box in mbox:
                ingest_mbox(batch, box)
    except ImapError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        # What was committed stays; the batch in flight was not kept, and nothing of it moved.
        echo(
            f"interrupted: {_counts(result)} committed before it; run the same command again"
            " to go on (nothing is stored twice)",
            fg="yellow",
            err=True,
        )
        sys.exit(130)
    except SQLAlchemyError as exc:
        # Nothing of the failed batch was kept and none of its messages moved: a re-run redoes it.
        echo(
            f"error: {store_error(exc)}; nothing of the failed batch was kept or moved, so run"
            f" again once it is fixed (before it: {_counts(result)})",
            fg="red",
            err=True,
        )
        sys.exit(EX_TEMPFAIL if piped else 1)
    if as_json:
        counts = result.counts
        print_json(
            {
                "stored": counts[Outcome.STORED],
                "duplicates": counts[Outcome.DUPLICATE],
                "quarantined": counts[Outcome.QUARANTINED],
                "conflicting": counts[Outcome.CONFLICT],
                "unrelated": counts["unrelated"],
                "unreadable": counts["unreadable"],
                "problems": list(result.problems),
                "skipped": list(result.skipped),
                "store": masked(db or default_url()),
            }
        )
        sys.exit(1 if result.counts["unreadable"] else 0)
    for problem in result.problems:
        echo(problem, fg="yellow")
    for line in result.skipped if verbose else ():
        echo(f"skipped: {line}")
    echo(_counts(result), bold=True)
    if result.skipped and not verbose:
        echo("(-v names every skipped input and why)", err=True)
    # Which store: the default lives in the user's data folder, which nobody guesses.
    echo(f"store: {masked(db or default_url())}", err=True)
    sys.exit(1 if result.counts["unreadable"] else 0)


def _counts(result: IngestResult) -> str:
    counts = result.counts
    return (
        f"stored {counts[Outcome.STORED]}, duplicates {counts[Outcome.DUPLICATE]},"
        f" quarantined {counts[Outcome.QUARANTINED]}, unrelated mail skipped {counts['unrelated']}"
        + (f", unreadable {counts['unreadable']}" if counts["unreadable"] else "")
        + (
            f", conflicting {counts[Outcome.CONFLICT]} (stored; another report has the same"
            " submitter and id: see `mtasts reports quarantine`)"
            if counts[Outcome.CONFLICT]
            else ""
        )
    )


def _log_round(result: IngestResult) -> None:
    """One line per --watch round that stored, found or broke something, for a service's journal."""
    if not (result.problems or any(n for kind, n in result.counts.items() if kind != "unrelated")):
        return  # mail without reports sitting in the mailbox is not news every round
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for problem in result.problems:
        echo(f"{stamp} {problem}", fg="yellow", err=True)
    if result.counts:
        echo(f"{stamp} {_counts(result)}", err=True)


@reports.command("quarantine")
@click.option(
    "--retry",
    is_flag=True,
    help="Parse every held report again (after an upgrade, or with a larger --max-report-size).",
)
@click.option(
    "--show", "show_id", type=int, metavar="ID", help="Write one item's raw bytes to stdout."
)
@click.option(
    "--drop", "drop_ids", type=int, multiple=True, metavar="ID", help="Delete an item for good."
)
@max_report_option
@db_option
@click.option("--json", "as_json", is_flag=True)
def quarantine(
    retry: bool,
    show_id: int | None,
    drop_ids: tuple[int, ...],
    max_report: int,
    db: str | None,
    as_json: bool,
) -> None:
    """List reports that could not be parsed (their raw bytes are kept for a fixed parser)."""
    store = open_report_store(db)
    if show_id is not None:
        data = store.quarantined_bytes(show_id)
        if data is None:
            echo(
                f"error: no quarantined item {show_id} (see mtasts reports quarantine)",
                fg="red",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        sys.stdout.buffer.write(data)  # as received: redirect it to a file to look at it
        return
    if drop_ids:
        missing = [i for i in drop_ids if not store.drop(i)]
        for i in missing:
            echo(f"error: no quarantined item {i}", fg="red", err=True)
        echo(f"dropped {len(drop_ids) - len(missing)} item(s)")
        sys.exit(EXIT_USAGE if missing else 0)
    if as_json and not retry:
        print_json(
            {
                "quarantine": [
                    {
                        "id": r.id,
                        "at": r.at.isoformat(),
                        "source": r.source,
                        "rule": r.rule,
                        "reason": r.reason,
                    }
                    for r in store.quarantine()
                ],
                "conflicts": [
                    {
                        "id": c.id,
                        "submitter": c.submitter,
                        "report_id": c.report_id,
                        "channel": c.channel,
                        "dkim_domain": c.dkim_domain,
                        "source": c.source,
                    }
                    for c in store.conflicts()
                ],
            }
        )
        return
    if retry:
        result = IngestResult()
        released = retry_quarantined(store, result, max_report)
        echo(
            f"released {released} from the quarantine ({result.counts[Outcome.STORED]} reports stored,"
            f" {result.counts[Outcome.DUPLICATE]} already stored), {len(store.quarantine())} still held",
            bold=True,
        )
        return
    conflicts = store.conflicts()
    if conflicts:
        table = Table(
            "report",
            "submitter",
            "report-id",
            "channel",
            "DKIM",
            "source",
            "ingested (UTC)",
            title="conflicting reports: one submitter and report-id, different content",
        )
        for c in conflicts:
            table.add_row(
                str(c.id),
                shown(c.submitter),
                shown(c.report_id),
                c.channel,
                shown(c.dkim_domain or "none"),
                shown(c.source),
                f"{c.ingested_at:%Y-%m-%d %H:%M}",
            )
        print_table(console(), table)
    rows = store.quarantine()
    if not rows:
        echo("the quarantine is empty")
        return
    table = Table("id", "when (UTC)", "source", "rule", "reason")
    for row in rows:
        table.add_row(
            str(row.id),
            f"{row.at:%Y-%m-%d %H:%M}",
            shown(row.source),
            shown(row.rule),
            shown(row.reason),
        )
    print_table(console(), table)


@reports.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="400d, 52w or YYYY-MM-DD: reports whose day starts before it go.",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@db_option
@click.option("--json", "as_json", is_flag=True)
def prune(older_than: str, dry_run: bool, db: str | None, as_json: bool) -> None:
    """Delete old reports, their rows and the raw bytes nothing else refers to (the quarantine stays)."""
    day = _since(older_than, "--older-than")
    assert day is not None
    before = dt.datetime.combine(day, dt.time(), dt.UTC)
    store = open_report_store(db)
    pruned = store.prune(before, dry_run=dry_run)
    # A SQLite file does not shrink by itself: give the freed pages back to the disk.
    sizes = store.vacuum() if pruned.reports and not dry_run else None
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "before": day.isoformat(),
                "reports": pruned.reports,
                "policy_rows": pruned.policy_rows,
                "raw": pruned.raw,
                "file_bytes": {"before": sizes[0], "after": sizes[1]} if sizes else None,
            }
        )
        return
    verb = "would prune" if dry_run else "pruned"
    echo(
        f"{verb} {pruned.reports:,} reports from before {day} ({pruned.policy_rows:,} policy rows,"
        f" {pruned.raw:,} raw reports)",
        bold=True,
    )
    if sizes:
        echo(f"the store file went from {sizes[0]:,} to {sizes[1]:,} bytes")


def _since(text: str | None, option: str = "--since") -> dt.date | None:
    """``30d``, ``2w`` or an ISO date."""
    if not text:
        return None
    today = dt.datetime.now(dt.UTC).date()
    try:
        if text[-1] in "dw" and text[:-1].isdigit():
            return today - dt.timedelta(days=int(text[:-1]) * (7 if text[-1] == "w" else 1))
        return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise click.BadParameter(f"{text!r}: use 30d, 2w or YYYY-MM-DD", param_hint=option)


@reports.command("summary")
@click.option("--domain", help="Only this policy domain.")
@click.option("--since", default="30d", show_default=True, help="30d, 2w or YYYY-MM-DD.")
@click.option(
    "--by",
    "group",
    type=click.Choice(["policy", "mx", "domain"]),
    default="policy",
    show_default=True,
    help="policy: sessions per day, sender and policy; mx: failed sessions per receiving MX and"
    " address; domain: one line per domain, with the trend against the period before.",
)
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path))
@db_option
def summary_command(
    domain: str | None, since: str, group: str, as_json: bool, csv_path: Path | None, db: str | None
) -> None:
    """Sessions per day, sender and policy (or failures per MX and address), with the result types."""
    if group == "mx":
        store = open_report_store(db)
        _NAMES.update(sender_names(store))
        _summary_by_mx(summary_by_mx(store, domain, _since(since)), as_json, csv_path)
        return
    if group == "domain":
        start = _since(since)
        assert start is not None
        rows_by_domain = [
            r
            for r in summary_by_domain(open_report_store(db), start)
            if not domain or r.domain == normalise_host(domain)
        ]
        _summary_by_domain(rows_by_domain, start, as_json, csv_path)
        return
    store = open_report_store(db)
    _NAMES.update(sender_names(store))
    rows = summary(store, domain, _since(since))
    conflicts = len(store.conflicts())
    if conflicts:  # on stderr, so --json and --csv stay clean
        echo(
            f"warning: {conflicts} stored reports conflict (one submitter and report-id, different"
            " content; a forged report?): the sums below hold both; see `mtasts reports quarantine`",
            fg="yellow",
            err=True,
        )
    if _export(rows, list(SummaryRow.__dataclass_fields__), as_json, csv_path):
        return
    table = Table(
        "day",
        "sender",
        "domain",
        "policy",
        "ok",
        "failed",
        "failure types",
        title="TLS-RPT sessions",
    )
    for row in rows:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(row.failures.items()))
        table.add_row(
            row.day.isoformat(),
            shown(_NAMES.get(row.submitter, row.submitter)),
            shown(row.domain),
            shown(row.policy_type),
            f"{row.successful:,}",
            f"[red]{row.failed:,}[/red]" if row.failed else "0",
            shown(failures),
        )
    print_table(console(), table)


def _export(
    rows: Sequence[SummaryRow | MxRow | DomainRow],
    fields: list[str],
    as_json: bool,
    csv_path: Path | None,
) -> bool:
    """Write ``--csv`` and print ``--json``; True when JSON was printed (then no table)."""
    if csv_path:
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                # A cell holds one value: the failure counts become "type=sessions type=sessions".
                writer.writerow(
                    {
                        key: csv_cell(
                            " ".join(f"{k}={v}" for k, v in value.items())
                            if isinstance(value, dict)
                            else value
                        )
                        for key, value in row.to_dict().items()
                    }
                )
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    return as_json


def _summary_by_domain(
    rows: list[DomainRow], since: dt.date, as_json: bool, csv_path: Path | None
) -> None:
    fields = [
        "domain",
        "sessions",
        "failed",
        "failure_rate",
        "top_failure",
        "senders",
        "previous_sessions",
        "previous_failed",
        "trend",
    ]
    if _export(rows, fields, as_json, csv_path):
        return
    if not rows:
        echo(f"no TLS-RPT reports since {since}")
        return
    table = Table(
        "domain",
        "sessions",
        "failed",
        "failure %",
        "top failure type",
        "senders",
        "trend",
        title=f"TLS-RPT by domain since {since} (trend: failure rate against the period before)",
    )
    for row in rows:
        table.add_row(
            shown(row.domain),
            f"{row.sessions:,}",
            f"{row.failed:,}",
            f"{row.failure_rate * 100:.2f}",
            shown(row.top_failure or "-"),
            str(row.senders),
            row.trend,
        )
    print_table(console(), table)


def _summary_by_mx(rows: list[MxRow], as_json: bool, csv_path: Path | None) -> None:
    if _export(rows, list(MxRow.__dataclass_fields__), as_json, csv_path):
        return
    table = Table(
        "day",
        "sender",
        "domain",
        "receiving MX",
        "address",
        "result type",
        "sessions",
        title="failed TLS sessions by MX",
    )
    for row in rows:
        table.add_row(
            row.day.isoformat(),
            shown(_NAMES.get(row.submitter, row.submitter)),
            shown(row.domain),
            shown(row.receiving_mx or "-"),
            shown(row.receiving_ip or "-"),
            shown(row.result_type),
            f"{row.sessions:,}",
        )
    print_table(console(), table)


large_sender_option = click.option(
    "--large-sender",
    "large_senders",
    metavar="DOMAIN",
    multiple=True,
    envvar="MTASTS_LARGE_SENDERS",
    help="Require an authenticated report from this sender (repeatable; default: one from any of"
    f" {', '.join(LARGE_SENDERS)}).",
)
trust_option = click.option(
    "--trust",
    "trusted",
    type=click.Choice([c.value for c in Channel]),
    multiple=True,
    envvar="MTASTS_TRUSTED_CHANNELS",
    help="Count reports from this channel as authenticated (a mailbox your own MTA DKIM-checks).",
)


@reports.command("readiness")
@click.argument("domains", nargs=-1)
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@large_sender_option
@trust_option
@db_option
def readiness_command(
    domains: tuple[str, ...],
    days: int,
    as_json: bool,
    large_senders: tuple[str, ...],
    trusted: tuple[str, ...],
    db: str | None,
) -> None:
    """Would anything have been blocked under enforce? READY (exit 0) or NOT READY / UNKNOWN (exit 1).

    With no DOMAIN, every domain with reports in the window is judged, in one call.
    """
    store = open_report_store(db)
    _NAMES.update(sender_names(store))
    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
    names = list(domains) or domains_reported(store, since)
    if not names:
        echo(f"no TLS-RPT reports in the last {days} days", err=True)
        sys.exit(1)
    verdicts = [
        readiness(
            store,
            name,
            days,
            large_senders=large_senders or LARGE_SENDERS,
            trusted=frozenset(Channel(t) for t in trusted),
            require_all=bool(large_senders),
        )
        for name in names
    ]
    if as_json:
        documents = [v.to_dict() for v in verdicts]
        click.echo(json.dumps(documents[0] if len(domains) == 1 else documents, indent=2))
    elif len(verdicts) == 1:
        _render_readiness(verdicts[0])
    else:
        colours = {Verdict.READY: "green", Verdict.NOT_READY: "red"}
        out = console()
        for v in verdicts:
            colour = colours.get(v.verdict, "yellow")
            out.print(
                f"{shown(v.domain)}: [bold {colour}]{v.verdict}[/bold {colour}]: {shown(v.reason)}",
                soft_wrap=True,
            )
        out.print(f"details: mtasts reports readiness DOMAIN (last {days} days)")
    sys.exit(0 if all(v.verdict is Verdict.READY for v in verdicts) else 1)


def _render_readiness(verdict: Readiness) -> None:
    out = console()
    for title, groups in (
        ("enforce would have deferred", verdict.would_defer),
        ("enforce would not change", verdict.unaffected),
    ):
        if not groups:
            continue
        table = Table(
            "sender",
            "result type",
            "MX",
            "address",
            "sessions",
            "dates",
            title=title,
            box=None,
            title_justify="left",
        )
        for g in groups:
            dates = f"{g.first} .. {g.last}" if g.first != g.last else str(g.first)
            table.add_row(
                shown(_NAMES.get(g.submitter, g.submitter)),
                shown(g.result_type),
                shown(g.receiving_mx or "-"),
                shown(g.receiving_ip or "-"),
                f"{g.sessions:,}",
                dates,
            )
        print_table(out, table)
    if verdict.would_defer or verdict.unaffected:
        out.print(
            "each result type is also the `mtasts check` finding that explains it: run mtasts check "
            + shown(verdict.domain)
        )
    if verdict.conflicts:
        out.print(
            f"[yellow]{verdict.conflicts} reports share a submitter and report-id with other"
            " content (a forged report?): see mtasts reports quarantine[/yellow]"
        )
    if verdict.sessions:
        vouched = (
            ", ".join(shown(v) for v in verdict.vouched) or "none (no verified DKIM signature)"
        )
        out.print(f"senders vouched for: {vouched}")
    colour = {Verdict.READY: "green", Verdict.NOT_READY: "red"}.get(verdict.verdict, "yellow")
    out.print(
        f"[bold {colour}]{verdict.verdict}[/bold {colour}]: {shown(verdict.domain)}, last {verdict.days} days: {shown(verdict.reason)}"
    )
