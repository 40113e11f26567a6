"""``mtasts status``: where every configured domain stands, and the next step with its date."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path

import click

from mtasts.check.checker import check_many
from mtasts.deploy.rollout import clean_days, report_readiness
from mtasts.deploy.state import DeployState, state_path
from mtasts.deploy.status import Status, judge, published_from
from mtasts.sts.domain import as_asked

from .deploy import _lab_or_flags, _load, config_option, with_check_options
from .output import EXIT_OK, EXIT_PROBLEMS, console, shown
from .reports import large_sender_option, trust_option

_DAY = 86400


def _lifetime(seconds: int) -> str:
    if seconds % _DAY == 0 and seconds >= _DAY:
        days = seconds // _DAY
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{seconds} s"


@click.command("status")
@click.argument("domains", nargs=-1)
@config_option
@with_check_options
@click.option("--db", envvar="MTASTS_DB", help="The TLS-RPT report store (see mtasts reports).")
@large_sender_option
@trust_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per domain.")
def status_command(
    domains: tuple[str, ...],
    config_path: Path,
    lab_dir: Path | None,
    nameservers: tuple[str, ...],
    ca_file: Path | None,
    timeout: float,
    db: str | None,
    large_senders: tuple[str, ...],
    trusted: tuple[str, ...],
    as_json: bool,
) -> None:
    """Where each domain of mtasts.toml stands: published id, reports, the next step and when.

    Exit 0 when every domain is published as configured and has no problem, else 1.
    """
    config = _load(config_path)
    wanted = {as_asked(d) for d in domains}
    chosen = [d for d in config.domains if not wanted or d.name in wanted]
    if wanted - {d.name for d in chosen}:
        missing = ", ".join(sorted(wanted - {d.name for d in chosen}))
        raise click.BadParameter(f"not in {config_path}: {missing}", param_hint="DOMAINS")
    state = DeployState(state_path(config_path))
    options = _lab_or_flags(lab_dir, nameservers, ca_file, timeout)
    checks = asyncio.run(check_many([d.name for d in chosen], options))
    now = dt.datetime.now(dt.UTC)
    statuses = []
    for domain, check in zip(chosen, checks, strict=True):
        verdict = report_readiness(domain.name, db, large_senders=large_senders, trusted=trusted)
        days = clean_days(domain.name, db)
        facts = (published_from(check), (verdict.verdict, verdict.reason))
        recorded = state.recorded_id(domain.name, domain.policy)
        clean = int(days) if days is not None else None
        retired = state.retired(domain.name)
        statuses.append(
            judge(domain, recorded, state.history(domain.name), *facts, clean, retired, now)
        )
    if as_json:
        for status in statuses:
            click.echo(json.dumps(status.to_dict()))
    else:
        for status in statuses:
            _render(status, now)
    healthy = all(s.in_sync and not s.problems for s in statuses)
    sys.exit(EXIT_OK if healthy else EXIT_PROBLEMS)


def _render(status: Status, now: dt.datetime) -> None:
    """A list, not a table: every line survives a narrow terminal and copies whole."""
    out = console()
    colour = "green" if status.in_sync else "yellow"
    out.print(
        f"[bold]{shown(status.domain)}[/bold]  {status.mode}, max_age {_lifetime(status.max_age)},"
        f" [{colour}]{shown(status.published)}[/{colour}]",
        soft_wrap=True,
    )
    if status.certificate_expires is not None:
        left = (status.certificate_expires - now).days
        out.print(
            f"  policy host certificate expires {status.certificate_expires:%Y-%m-%d} ({left} days)"
        )
    since = (
        f"{status.mode} since {status.mode_since:%Y-%m-%d} ({(now - status.mode_since).days} days)"
        if status.mode_since
        else f"{status.mode}, never published"
    )
    clean = (
        "no reports yet"
        if status.clean_days is None
        else f"{status.clean_days} clean days of reports"
    )
    out.print(
        f"  {since}; {clean}; readiness {status.readiness}: {shown(status.readiness_reason)}",
        soft_wrap=True,
    )
    for problem in status.problems:
        out.print(f"  [red]problem:[/red] {shown(problem)}", soft_wrap=True)
    out.print(f"  [bold]next:[/bold] {shown(status.next_step)}", soft_wrap=True)


__all__ = ["status_command"]
