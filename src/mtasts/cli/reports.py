"""``mtasts reports``: ingest TLS-RPT reports and look after the quarantine."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from mtasts.reports.ingest import (
    IngestResult,
    ingest_bytes,
    ingest_maildir,
    ingest_mbox,
    ingest_path,
)
from mtasts.reports.store import Outcome, ReportStore, default_url, open_store

from .output import EXIT_USAGE, console, echo

db_option = click.option(
    "--db", envvar="MTASTS_DB", help="SQLAlchemy URL (default: a SQLite file in your data folder)."
)


def _store(db: str | None) -> ReportStore:
    try:
        return open_store(db or default_url())
    except Exception as exc:  # a wrong URL or an unreachable server: say which, in one line
        echo(
            f"error: cannot open the report store {db or default_url()}: {exc}".splitlines()[0],
            fg="red",
            err=True,
        )
        sys.exit(EXIT_USAGE)


@click.group()
def reports() -> None:
    """TLS-RPT reports (RFC 8460): ingest them, keep every raw report, quarantine what cannot be read."""


@reports.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, allow_dash=True, path_type=Path))
@click.option("--maildir", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              help="A Maildir: processed messages move to .Processed, failed ones to .Failed.")  # fmt: skip
@click.option("--mbox", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True)
@db_option
def ingest(
    paths: tuple[Path, ...], maildir: tuple[Path, ...], mbox: tuple[Path, ...], db: str | None
) -> None:
    """Store reports from files, folders, zips, mail files, Maildirs, mboxes or '-' (one message on stdin).

    Exits 0 whenever every input was kept (stored, duplicate or quarantined), so
    Postfix's pipe transport never bounces a report mail.
    """
    if not (paths or maildir or mbox):
        raise click.UsageError("give PATHS, '-', --maildir or --mbox")
    store = _store(db)
    result = IngestResult()
    for path in paths:
        if str(path) == "-":
            ingest_bytes(store, sys.stdin.buffer.read(), "<stdin>", result)
        else:
            ingest_path(store, path, result)
    for folder in maildir:
        ingest_maildir(store, folder, result)
    for box in mbox:
        ingest_mbox(store, box, result)
    for problem in result.problems:
        echo(f"quarantined: {problem}", fg="yellow")
    counts = result.counts
    echo(
        f"stored {counts[Outcome.STORED]}, duplicates {counts[Outcome.DUPLICATE]},"
        f" quarantined {counts[Outcome.QUARANTINED]}, unrelated mail skipped {counts['unrelated']}"
        + (f", unreadable {counts['unreadable']}" if counts["unreadable"] else ""),
        bold=True,
    )
    sys.exit(1 if counts["unreadable"] else 0)


@reports.command("quarantine")
@db_option
def quarantine(db: str | None) -> None:
    """List reports that could not be parsed (their raw bytes are kept for a fixed parser)."""
    rows = _store(db).quarantine()
    if not rows:
        echo("the quarantine is empty")
        return
    table = Table("id", "when (UTC)", "source", "rule", "reason")
    for row in rows:
        table.add_row(str(row.id), f"{row.at:%Y-%m-%d %H:%M}", row.source, row.rule, row.reason)
    console().print(table)
