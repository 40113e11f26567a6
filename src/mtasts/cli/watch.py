"""``mtasts watch``: observe your domains and your partners over time, and say what changed."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.table import Table

from mtasts.check.checker import CheckOptions
from mtasts.check.findings import Severity
from mtasts.config import ConfigError
from mtasts.deploy.config import load_config
from mtasts.net.dns import Nameserver
from mtasts.watch.config import WatchConfig, duration, load_watch
from mtasts.watch.daemon import Settings, render_metrics, run_forever
from mtasts.watch.events import Event, EventStatus
from mtasts.watch.history import timeline
from mtasts.watch.observe import PassResult, run_pass
from mtasts.watch.status import status_rows
from mtasts.watch.store import WatchStore

from .check import _configured, _options_from_lab
from .output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    console,
    echo,
    options,
    print_json,
    print_table,
)
from .output import shown as escape
from .reports import db_option, open_report_store

_STYLE = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("mtasts.toml"),
    show_default=True,
    envvar="MTASTS_CONFIG",
    help="Own domains ([[domain]]) and the [watch] table.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
network_options = options(
    click.option(
        "--partners",
        "partner_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A partner list (one domain per line, optional label, '#' comments); repeatable.",
    ),
    click.option("--nameserver", "nameservers", multiple=True, help="HOST[:PORT] (repeatable)."),
    click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Extra trusted CAs.",
    ),
    click.option("--smtp-port", type=click.IntRange(1, 65535), default=25, show_default=True),
    click.option("--https-port", type=click.IntRange(1, 65535), default=443, show_default=True),
    click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True),
    click.option(
        "--lab",
        "lab_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Take nameserver, CA and ports from a running lab's state folder.",
    ),
    click.option("--concurrency", type=click.IntRange(1, 1000), default=50, show_default=True),
    click.option(
        "--probes",
        type=click.IntRange(1, 20),
        default=1,
        show_default=True,
        help="Probe each MX address N times (a load balancer's bad backend).",
    ),
    click.option("--max-mx", type=click.IntRange(1, 1000), default=16, show_default=True),
    click.option("--max-addresses", type=click.IntRange(1, 1000), default=8, show_default=True),
)


def _network(config: WatchConfig, given: dict[str, Any]) -> CheckOptions:
    """A flag typed (or set by env) wins over [watch], which wins over the lab, then defaults."""
    context = click.get_current_context()
    typed = {
        k
        for k in given
        if context.get_parameter_source(k)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    lab_dir = (
        given["lab_dir"] if "lab_dir" in typed else config.network.get("lab", given["lab_dir"])
    )
    settings: dict[str, Any] = _options_from_lab(Path(lab_dir)) if lab_dir else {}
    table = config.network
    names = (
        given["nameservers"]
        if "nameservers" in typed
        else table.get("nameserver", given["nameservers"])
    )
    if isinstance(names, str):
        names = [names]
    try:
        if names or "nameservers" not in settings:
            settings["nameservers"] = tuple(Nameserver.parse(n) for n in names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nameserver") from None
    for key, flag in (
        ("ca_file", "ca_file"),
        ("smtp_port", "smtp_port"),
        ("https_port", "https_port"),
    ):
        if flag in typed:
            settings[key] = given[flag]
        elif key in table:
            settings[key] = table[key]
        elif key not in settings:
            settings[key] = given[flag]
    timeout = (
        given["timeout"] if "timeout" in typed else float(table.get("timeout", given["timeout"]))
    )
    return CheckOptions(
        timeout=timeout,
        probes=given["probes"],
        max_mx=given["max_mx"],
        max_addresses=given["max_addresses"],
        **settings,
    )


def _load(config_path: Path, db: str | None, given: dict[str, Any]) -> Settings:
    own: tuple[str, ...] = ()
    if config_path.exists():
        own = tuple(d.name for d in load_config(config_path).domains)
    config = load_watch(config_path, own, tuple(given["partner_files"]))
    for problem in config.problems:  # a bad partner line is said; the rest is watched
        echo(f"error: {problem}", fg="red", err=True)
    if not config.own and not config.partners:
        raise click.UsageError(
            f"nothing to watch: configure [[domain]] tables or [watch] partners in {config_path},"
            " or give --partners FILE"
        )
    store = WatchStore(open_report_store(db).engine)
    return Settings(
        store,
        {
            "config": config,
            "options": _network(config, given),
            "expected": _configured(config_path),
            "concurrency": given["concurrency"],
            # large passes gather in several processes, as `check --file` does
            "workers": max(1, min(os.cpu_count() or 1, 4)),
        },
    )


def _store_only(db: str | None) -> WatchStore:
    return WatchStore(open_report_store(db).engine)


def _event_line(event: Event) -> str:
    style = _STYLE[event.severity]
    state = "" if event.status is EventStatus.CHANGED else f" [dim]({event.status})[/dim]"
    return (
        f"  [{style}]{event.severity:<7}[/{style}] [bold]{event.code}[/bold]{state}"
        f" {escape(event.subject)}: {escape(event.message)}"
    )


@click.group()
def watch() -> None:
    """Watch your domains and partners over time: history, change events and alerts."""


@watch.command("once")
@config_option
@db_option
@network_options
@click.option("--all", "everything", is_flag=True, help="Check every domain now, due or not.")
@json_option
def watch_once(
    config_path: Path, db: str | None, everything: bool, as_json: bool, **given: Any
) -> None:
    """One pass over the domains that are due (for cron); exit 1 when an error event was raised
    or a channel failed."""
    try:
        settings = _load(config_path, db, given)
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    result = run_pass(settings.store, everything=everything, **settings.pass_args)
    _report_pass(result, as_json)
    failed = any(d.error for d in result.delivered)
    errors = any(
        e.severity is Severity.ERROR and e.status is not EventStatus.RESOLVED for e in result.events
    )
    sys.exit(EXIT_PROBLEMS if failed or errors else EXIT_OK)


def _report_pass(result: PassResult, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "started": result.started.isoformat(),
                "finished": result.finished.isoformat() if result.finished else None,
                "checked": [c.domain for c in result.checked],
                "skipped": result.skipped,
                "events": [e.to_dict() for e in result.events],
                "delivered": [
                    {"channel": d.channel, "sent": d.sent, "error": d.error}
                    for d in result.delivered
                ],
                "errors": result.errors,
            }
        )
        return
    out = console()
    out.print(
        f"watched {len(result.checked)} domain(s)"
        + (f", {result.skipped} not due yet" if result.skipped else "")
        + f": {len(result.events)} event(s)"
    )
    for event in result.events:
        out.print(f"[bold]{escape(event.domain)}[/bold]" + _event_line(event), soft_wrap=True)
    for delivered in result.delivered:
        if delivered.error:
            out.print(
                f"[red]channel {escape(delivered.channel)} failed[/red]: {escape(delivered.error)} (kept; retried later)"
            )
        else:
            out.print(f"channel {escape(delivered.channel)}: {delivered.sent} event(s) sent")


@watch.command("run")
@config_option
@db_option
@network_options
@click.option(
    "--metrics", "metrics_at", metavar="HOST:PORT", help="Serve Prometheus /metrics here."
)
def watch_run(config_path: Path, db: str | None, metrics_at: str | None, **given: Any) -> None:
    """Run as a daemon: each domain on its schedule; SIGHUP reloads mtasts.toml."""

    def load() -> Settings:
        return _load(config_path, db, given)

    try:
        first = load()
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    listen = metrics_at or first.pass_args["config"].metrics
    loaded = [first]

    def settings() -> Settings:
        if loaded:
            return loaded.pop()
        return load()

    def said(result: PassResult) -> None:
        if result.checked or result.events:
            _report_pass(result, False)

    echo(f"watching; metrics on http://{listen}/metrics" if listen else "watching", err=True)
    run_forever(settings, listen, said)


@watch.command("status")
@db_option
@json_option
def watch_status(db: str | None, as_json: bool) -> None:
    """A line per watched domain: verdict, mode, first expiring certificate, open events,
    cache horizon."""
    store = _store_only(db)
    now = dt.datetime.now(dt.UTC)
    rows = status_rows(store.watched(), now)
    if as_json:
        print_json({"domains": [r.to_dict() for r in rows], "storage": store.storage()})
        return
    if not rows:
        echo("nothing watched yet: run `mtasts watch once`")
        return
    table = Table(
        "domain",
        "role",
        "verdict",
        "mode",
        "readiness",
        "first cert expiry",
        "open",
        "cache horizon",
        "last run",
        box=None,
        pad_edge=False,
    )
    for row in rows:
        expiry = (
            f"{row.first_expiry_days} d ({escape(row.first_expiry_subject or '')})"
            if row.first_expiry_days is not None
            else "-"
        )
        table.add_row(
            escape(row.domain),
            row.role + (f" ({escape(row.label)})" if row.label else ""),
            row.verdict,
            row.mode,
            row.readiness or "-",
            expiry,
            str(row.open_events),
            f"{row.horizon:%Y-%m-%d %H:%M}" if row.horizon else "-",
            f"{row.last_run:%Y-%m-%d %H:%M}" if row.last_run else "-",
        )
    print_table(console(), table)


def _since(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.now(dt.UTC) - duration(value, "--since")
    except ConfigError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: a duration (7d, 12h) or an ISO date", param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@watch.command("events")
@db_option
@click.option("--since", help="A duration back from now (7d, 12h) or an ISO date.")
@click.option("--domain", help="Only this domain.")
@json_option
def watch_events(db: str | None, since: str | None, domain: str | None, as_json: bool) -> None:
    """The events, oldest first."""
    events = _store_only(db).events(_since(since), domain.lower().rstrip(".") if domain else None)
    if as_json:
        print_json({"events": [e.to_dict() for e in events]})
        return
    out = console()
    for event in events:
        out.print(
            f"{event.at:%Y-%m-%d %H:%M} [bold]{escape(event.domain)}[/bold]" + _event_line(event),
            soft_wrap=True,
        )
    if not events:
        echo("no events")


@watch.command("history")
@click.argument("domain")
@db_option
@click.option(
    "--limit", type=click.IntRange(1, 10000), default=50, show_default=True, help="Observations."
)
@json_option
def watch_history(domain: str, db: str | None, limit: int, as_json: bool) -> None:
    """DOMAIN's timeline: each distinct observation (unchanged since ...), the events, and a
    diff of the policy wherever it changed."""
    name = domain.lower().rstrip(".")
    entries = timeline(_store_only(db), name, limit)
    if as_json:
        print_json({"domain": name, "timeline": entries})
        return
    if not entries:
        echo(f"no history for {name}: is it watched? (mtasts watch status)")
        sys.exit(EXIT_PROBLEMS)
    out = console()
    for entry in entries:
        moment = dt.datetime.fromisoformat(
            entry["first_seen"] if entry["type"] == "observation" else entry["at"]
        )
        if entry["type"] == "observation":
            until = dt.datetime.fromisoformat(entry["unchanged_until"])
            out.print(
                f"{moment:%Y-%m-%d %H:%M} observed: {entry['verdict']}, MTA-STS {entry['mode']},"
                f" {len(entry['findings'])} finding(s); unchanged until {until:%Y-%m-%d %H:%M}"
                f" ({entry['runs']} run(s))"
            )
            if entry.get("policy_diff"):
                for line in entry["policy_diff"].splitlines():
                    style = (
                        "green"
                        if line.startswith("+")
                        else "red"
                        if line.startswith("-")
                        else "dim"
                    )
                    out.print(f"    [{style}]{escape(line)}[/{style}]")
        else:
            event = Event.from_dict(entry)
            out.print(f"{moment:%Y-%m-%d %H:%M}" + _event_line(event), soft_wrap=True)


@watch.command("prune")
@config_option
@db_option
@click.option(
    "--older-than", help="Forget what is older than this (default: [watch] retention, 400d)."
)
@json_option
def watch_prune(config_path: Path, db: str | None, older_than: str | None, as_json: bool) -> None:
    """Forget old observations, delivered events and runs (each domain's latest observation stays)."""
    try:
        keep = (
            duration(older_than, "--older-than")
            if older_than
            else load_watch(config_path, ()).retention
        )
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    removed = _store_only(db).prune(dt.datetime.now(dt.UTC) - keep)
    if as_json:
        print_json({"removed": removed})
        return
    echo(", ".join(f"{n} {what}" for what, n in removed.items()) + " removed")


@watch.command("channels")
@config_option
@db_option
@json_option
def watch_channels(config_path: Path, db: str | None, as_json: bool) -> None:
    """Each alert channel: last success, last error, events sent and waiting."""
    try:
        names = [c.name for c in load_watch(config_path, ()).channels]
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    health = _store_only(db).channels(names)
    if as_json:
        print_json({"channels": [h.to_dict() for h in health]})
        return
    if not health:
        echo("no channels configured ([[watch.channel]] in mtasts.toml)")
        return
    table = Table(
        "channel", "last success", "last error", "sent", "waiting", box=None, pad_edge=False
    )
    for h in health:
        error = (
            f"{h.last_error_at:%Y-%m-%d %H:%M} {escape(h.last_error or '')}"
            if h.last_error_at
            else "-"
        )
        table.add_row(
            escape(h.name),
            f"{h.last_success:%Y-%m-%d %H:%M}" if h.last_success else "never",
            error,
            str(h.sent),
            str(h.pending),
        )
    print_table(console(), table)


@watch.command("metrics")
@config_option
@db_option
def watch_metrics(config_path: Path, db: str | None) -> None:
    """Print the Prometheus metrics (for node_exporter's textfile collector after a cron pass)."""
    try:
        config = load_watch(config_path, ())
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(render_metrics(Settings(_store_only(db), {"config": config})), nl=False)
