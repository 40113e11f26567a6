"""``mtasts tlsrpt``: the sending side reports back (RFC 8460): collect, send, status, dkim-key."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mtasts.config import ConfigError
from mtasts.net.dns import Nameserver, Resolver
from mtasts.reporter.config import TlsrptConfig, load_tlsrpt
from mtasts.reporter.datagrams import DatagramIntake, open_socket, read_datagrams
from mtasts.reporter.dkim import DkimKeyError, create_key, public_record, read_key
from mtasts.reporter.follow import Joiner, JournalFollower, LogFollower
from mtasts.reporter.postfix_log import PostfixLogReader
from mtasts.reporter.send import send_due, write_dry_run
from mtasts.reporter.store import ReporterStore
from mtasts.reports.store import default_url
from mtasts.resolver.answers import AnswerLog

from .check import _options_from_lab
from .output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    console,
    echo,
    print_json,
    print_table,
    setup_logging,
)
from .output import shown as escape
from .reports import db_option, open_report_store

log = logging.getLogger("mtasts.reporter")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("mtasts.toml"),
    show_default=True,
    envvar="MTASTS_CONFIG",
    help="The [tlsrpt] table: organization, contact, relay, DKIM key, socket, log.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
lab_option = click.option(
    "--lab",
    "lab_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Take nameserver, CA and ports from a running lab's state folder.",
)


def _config(path: Path, **overrides: Any) -> TlsrptConfig:
    try:
        return load_tlsrpt(path).merged(**overrides)
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)


def _store(db: str | None) -> ReporterStore:
    return ReporterStore(open_report_store(db).engine)


def _lab(lab_dir: Path | None) -> dict[str, Any]:
    if lab_dir is None:
        return {}
    lab = _options_from_lab(lab_dir)
    return {
        "nameservers": tuple(
            n if isinstance(n, str) else f"{n.address}:{n.port}" for n in lab["nameservers"]
        ),
        "ca_file": lab["ca_file"],
        "smtp_port": lab["smtp_port"],
    }


def _resolver(config: TlsrptConfig) -> Resolver:
    try:
        servers = tuple(Nameserver.parse(n) for n in config.nameservers)
    except ValueError as exc:
        echo(f"error: nameserver: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    return Resolver(servers, timeout=min(config.timeout, 10.0))


@click.group()
def tlsrpt() -> None:
    """Send TLS-RPT reports for the mail this host sends (RFC 8460): collect, send, status."""


@tlsrpt.command("collect")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The libtlsrpt datagram socket (Postfix 3.10+: smtp_tlsrpt_socket_name).",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Follow this Postfix mail log (Postfix 3.7-3.9, smtp_tls_loglevel = 1).",
)
@click.option("--journal", is_flag=True, help="Follow Postfix's messages in journald instead.")
@click.option(
    "--answers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The resolver's answer log (default: [tlsrpt] answers, else its cache file).",
)
@click.option("--once", is_flag=True, help="Read what the log holds now, store it, and exit.")
@click.option("--poll", type=click.FloatRange(0.05, 60), default=1.0, show_default=True)
@lab_option
@config_option
@db_option
@json_option
def collect(
    socket_path: Path | None,
    log_path: Path | None,
    journal: bool,
    answers: Path | None,
    once: bool,
    poll: float,
    lab_dir: Path | None,
    config_path: Path,
    db: str | None,
    as_json: bool,
) -> None:
    """Count TLS sessions per UTC day from libtlsrpt datagrams and/or Postfix's log."""
    config = _config(
        config_path, socket=socket_path, log=log_path, answers=answers, **_lab(lab_dir)
    )
    if not (socket_path or log_path or journal) and config.log:
        log_path = config.log
    use_socket = socket_path is not None or not (log_path or journal)
    store = _store(db)
    setup_logging()
    answer_log = None
    answer_path = config.answers or _resolver_answers(config_path)
    if (log_path or journal) and answer_path is not None:
        if answer_path.exists():
            answer_log = AnswerLog(answer_path, readonly=True)
        else:
            echo(
                f"warning: no resolver answer log at {answer_path}: sessions count as"
                " no-policy-found until the resolver writes it",
                fg="yellow",
                err=True,
            )
    joiner = Joiner(
        answer_log,
        frozenset({config.from_address.lower()}),
        confirm=config.confirm,
        smtp_port=config.smtp_port,
        ca_file=config.ca_file,
        timeout=min(config.timeout, 10.0),
    )
    reader = PostfixLogReader(skip_services=config.skip_services)
    try:
        totals = asyncio.run(
            _collect(
                config,
                store,
                db or default_url(),
                joiner,
                reader,
                use_socket,
                log_path,
                journal,
                once,
                poll,
            )
        )
    except (OSError, RuntimeError) as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_PROBLEMS)
    if as_json:
        print_json(totals)
    else:
        echo(
            f"collected: {totals['sessions']} session(s) from {totals['received']} item(s),"
            f" {totals['malformed']} malformed",
            err=not once,
        )


def _dgram_queue() -> int | None:
    try:
        return int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    except (OSError, ValueError):
        return None


def _resolver_answers(config_path: Path) -> Path | None:
    from mtasts.resolver.config import load as load_resolver_config

    try:
        return load_resolver_config(config_path).answers_path()
    except (ConfigError, OSError):
        return None


async def _collect(
    config: TlsrptConfig,
    store: ReporterStore,
    db_url: str,
    joiner: Joiner,
    reader: PostfixLogReader,
    use_socket: bool,
    log_path: Path | None,
    journal: bool,
    once: bool,
    poll: float,
) -> dict[str, int]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = []
    intake = None
    totals = {"received": 0, "sessions": 0, "malformed": 0}
    if use_socket and not once:
        sock, granted = open_socket(
            config.socket, config.socket_mode, config.socket_owner, config.socket_group
        )
        log.info("listening on %s receive_buffer=%d", config.socket, granted)
        intake = DatagramIntake(db_url, f"socket:{config.socket}", config.keep_malformed)
        quit_reading = threading.Event()
        tasks.append(
            asyncio.create_task(asyncio.to_thread(read_datagrams, sock, intake, quit_reading))
        )

        async def relay_stop() -> None:
            await stop.wait()
            quit_reading.set()

        tasks.append(asyncio.create_task(relay_stop()))
        queue = _dgram_queue()
        if queue is not None and queue < 512:
            log.warning(
                "net.unix.max_dgram_qlen is %d: a burst of more datagrams than that is dropped"
                " by the MTA before we can read it; raise it (sysctl) to 512 or more",
                queue,
            )
    follower: LogFollower | JournalFollower | None = None
    if log_path is not None:
        follower = LogFollower(log_path, store, joiner, reader)
    elif journal:
        follower = JournalFollower(store, joiner, reader)
    if follower is not None:
        if once:
            totals["received"] += await follower.poll()
            stop.set()
        else:

            async def follow() -> None:
                assert follower is not None
                while not stop.is_set():
                    try:
                        totals["received"] += await follower.poll()
                    except Exception as exc:  # a bad line or a busy database: retry, never die
                        log.error("log follower: %s", exc)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll):
                            await stop.wait()

            tasks.append(asyncio.create_task(follow()))
    if not once:
        log.info("collecting; SIGTERM stops after storing what was read")
        await stop.wait()
    await asyncio.gather(*tasks)
    if intake is not None:
        for key in totals:
            totals[key] += intake.totals[key]
    if follower is not None:
        totals["sessions"] += follower.sessions
    return totals


@tlsrpt.command("send")
@click.option("--day", type=click.DateTime(["%Y-%m-%d"]), help="Send (or write) this UTC day now.")
@click.option("--dry-run", is_flag=True, help="Write the reports and messages instead of sending.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --dry-run: the folder for the JSON, .json.gz and .eml files.",
)
@click.option("--no-delay", is_flag=True, help="Do not wait the random delay after midnight UTC.")
@click.option(
    "--partial-day",
    is_flag=True,
    help="With --day TODAY: send today's report as it stands (demos and tests; the rest of"
    " the day is then never reported).",
)
@lab_option
@config_option
@db_option
@json_option
def send(
    day: dt.datetime | None,
    dry_run: bool,
    out: Path | None,
    no_delay: bool,
    partial_day: bool,
    lab_dir: Path | None,
    config_path: Path,
    db: str | None,
    as_json: bool,
) -> None:
    """Build the reports of finished UTC days and deliver the due ones to every rua URI."""
    config = _config(config_path, **_lab(lab_dir))
    store = _store(db)
    now = dt.datetime.now(dt.UTC)
    chosen = day.date() if day else None
    if dry_run:
        if out is None:
            echo("error: --dry-run needs --out DIR", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        summary = write_dry_run(store, config, chosen or now.date(), out)
    else:
        missing = config.missing_for_send()
        if missing:
            for line in missing:
                echo(f"error: {config_path}: {line}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        if chosen is not None and chosen > now.date():
            echo(f"error: --day {chosen} is in the future", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        if chosen is not None and chosen == now.date() and not partial_day:
            echo(
                f"error: --day {chosen}: the UTC day is not over; reports cover whole days"
                " (RFC 8460 §4.1). Use --dry-run --out DIR to see it now.",
                fg="red",
                err=True,
            )
            sys.exit(EXIT_USAGE)
        try:
            summary = asyncio.run(
                send_due(store, config, _resolver(config), now, day=chosen, no_delay=no_delay)
            )
        except DkimKeyError as exc:
            echo(f"error: {exc}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
    if as_json:
        print_json(summary.to_dict())
    else:
        for path in summary.written:
            echo(f"wrote {path}")
        echo(
            f"reports: {summary.built} built, {summary.sent} sent, {summary.retrying} to retry,"
            f" {summary.failed} given up, {summary.no_rua} for domains that take none"
        )
        for error in summary.errors:
            echo(f"  {escape(error)}", fg="yellow", err=True)
        if summary.relay_not_tried:
            echo(
                f"  {summary.relay_not_tried} more mail(s) not tried in this run after the relay"
                " failed (above); each report retries on its own schedule",
                fg="yellow",
                err=True,
            )
    sys.exit(EXIT_PROBLEMS if summary.failed or summary.retrying else EXIT_OK)


@tlsrpt.command("status")
@click.option("--days", type=click.IntRange(1, 400), default=7, show_default=True)
@db_option
@json_option
def status(days: int, db: str | None, as_json: bool) -> None:
    """Per UTC day: domains, sessions, reports pending, sent and failed (with the last error)."""
    store = _store(db)
    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1)
    rows = store.status(since)
    intake = store.intake()
    endpoints = store.endpoints()
    if as_json:
        print_json(
            {
                "days": [r.to_dict() for r in rows],
                "intake": [i.to_dict() for i in intake],
                "endpoints": endpoints,
            }
        )
        return
    table = Table(
        "day (UTC)",
        "domains",
        "sessions",
        "failed",
        "pending",
        "sent",
        "failed",
        "no rua",
        "last error",
    )
    for r in rows:
        table.add_row(
            r.day,
            str(r.domains),
            str(r.sessions),
            str(r.failed_sessions),
            str(r.pending),
            str(r.sent),
            str(r.failed),
            str(r.no_rua),
            escape(r.last_error or ""),
        )
    out = console()
    print_table(out, table)
    for i in intake:
        out.print(
            f"intake {escape(i.source)}: {i.received} read, {i.sessions} session(s),"
            f" {i.malformed} malformed"
            + (f"; last error: {escape(i.last_error)}" if i.last_error else "")
        )
    for e in endpoints:
        if e["suppressed_until"]:
            out.print(
                f"[yellow]suppressed until {e['suppressed_until']}: {escape(e['uri'])}"
                f" ({escape(e['last_error'] or '')})[/yellow]"
            )


@tlsrpt.command("prune")
@click.option("--older-than", default="90d", show_default=True, help="30d, 12w ...")
@db_option
@json_option
def prune(older_than: str, db: str | None, as_json: bool) -> None:
    """Drop session tallies and finished reports of days older than this."""
    from mtasts.watch.config import duration

    try:
        age = duration(older_than, "--older-than")
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    before = (dt.datetime.now(dt.UTC) - age).date()
    gone = _store(db).prune(before)
    if as_json:
        print_json({"before": before.isoformat(), "tallies": gone})
    else:
        echo(f"pruned {gone} tally row(s) of days before {before}")


@tlsrpt.command("dkim-key")
@click.option("--domain", required=True, help="The reporting domain that signs (d=).")
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tlsrpt-dkim.key"),
    show_default=True,
    help="Where the private key goes (0600; an existing key is only read).",
)
@click.option("--selector", default="tlsrpt", show_default=True)
@json_option
def dkim_key(domain: str, key_path: Path, selector: str, as_json: bool) -> None:
    """Create the DKIM key report mail is signed with, and print its DNS record (s=tlsrpt)."""
    try:
        pem = read_key(key_path) if key_path.exists() else create_key(key_path)
    except DkimKeyError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    owner = f"{selector}._domainkey.{domain.lower().rstrip('.')}"
    value = public_record(pem)
    if as_json:
        print_json({"key": str(key_path), "name": owner, "type": "TXT", "value": value})
        return
    echo(f"key: {key_path}")
    echo("publish this TXT record (split into 255-character strings if your DNS host asks):")
    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    echo(f"{owner}. IN TXT {chunks}")
    echo(f'then set in mtasts.toml [tlsrpt]: dkim_key = "{key_path}", dkim_domain = "{domain}"')
