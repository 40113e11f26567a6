"""``mtasts init``, ``records`` and ``history``: configure your domains and what to publish."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from mtasts.check.checker import CheckOptions, check_domain
from mtasts.deploy.config import (
    DeployConfig,
    DeployConfigError,
    DomainConfig,
    domain_table,
    load_config,
    set_domain_value,
)
from mtasts.deploy.publish import PublishError, PublishTarget, publish
from mtasts.deploy.records import Publication
from mtasts.deploy.rollout import (
    Readiness,
    Retirement,
    clean_days,
    enforce_gate,
    max_age_gate,
    report_readiness,
)
from mtasts.deploy.state import DeployState, state_path
from mtasts.files import locked, write_atomic
from mtasts.lab.runtime import LabClient, read_state
from mtasts.net.dns import Nameserver
from mtasts.sts import Mode, MxPattern
from mtasts.sts.domain import as_asked, normalise_host

from .output import EXIT_PROBLEMS, EXIT_USAGE, console, echo, options, print_json, print_table
from .reports import large_sender_option, trust_option

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A max_age: seconds, or a number with s, m, h, d or w (RFC 8461 §3.2: at most a year)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        unit = _UNITS.get(text[-1:], 0)
        number = text[:-1] if unit else text
        if not number.isdigit():
            self.fail(f"{value!r}: use seconds or a number with s, m, h, d or w (2w)", param, ctx)
        seconds = int(number) * (unit or 1)
        if seconds > 31557600:
            self.fail(
                f"{value!r} is {seconds:,} seconds, over RFC 8461's one year (31557600)", param, ctx
            )
        return seconds


DURATION = Duration()
_LARGE_MAX_AGE = 7 * 86400  # past this, a max_age step goes through the enforce gate
F = TypeVar("F", bound=Callable[..., None])


def serialised(command: F) -> F:
    """One writer of mtasts.toml and its state file at a time: each is read, changed, written."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        path: Path = kwargs["config_path"]
        with locked(path):
            command(*args, **kwargs)

    return run  # type: ignore[return-value]


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("mtasts.toml"),
    show_default=True,
    envvar="MTASTS_CONFIG",
    help="The configuration file.",
)


def _a_label(pattern: str) -> str:
    wildcard = pattern.startswith("*.")
    try:
        name = as_asked(pattern[2:] if wildcard else pattern)
    except ValueError:
        return pattern  # MxPattern.parse says what is wrong with it
    return f"*.{name}" if wildcard else name


def _load(path: Path) -> DeployConfig:
    try:
        return load_config(path)
    except DeployConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)


def _domain_or_exit(config: DeployConfig, name: str) -> DomainConfig:
    try:
        return config.domain(name)
    except DeployConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)


def publication(config: DeployConfig, domain: DomainConfig) -> Publication:
    state = DeployState(state_path(config.path))
    return Publication(domain, state.policy_id(domain.name, domain.policy))


@click.command()
@click.argument("domain")
@click.option(
    "--mx", "mx", multiple=True, required=True, help="An MX host name or *.domain pattern (repeat)."
)
@click.option("--rua", multiple=True, help="Where TLS-RPT reports go: mailto: or https: (repeat).")
@click.option(
    "--mode", type=click.Choice([m.value for m in Mode]), default="testing", show_default=True
)
@click.option(
    "--max-age",
    type=DURATION,
    default="86400",
    show_default=True,
    help="How long senders may cache the policy: seconds, or 1d, 2w.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Start in enforce, or with a max_age over a week, without the gate (says what it skipped).",
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@serialised
def init(
    domain: str,
    mx: tuple[str, ...],
    rua: tuple[str, ...],
    mode: str,
    max_age: int,
    force: bool,
    config_path: Path,
    as_json: bool,
) -> None:
    """Add DOMAIN to the configuration, starting in testing with a one-day max_age."""
    name = as_asked(domain)
    if (mode == "enforce" or max_age > _LARGE_MAX_AGE) and not force:
        # Nothing is published or proven yet: the enforce gate could only refuse.
        echo(
            f"error: {name}: a new domain starts in testing with a short max_age; enforce and"
            " long max_age come after `mtasts mode DOMAIN enforce` and `mtasts max-age`, whose"
            " gate proves the MX hosts and reports first (--force skips this)",
            fg="red",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    if force and (mode == "enforce" or max_age > _LARGE_MAX_AGE):
        echo(
            f"warning: {name}: skipped (--force): the enforce gate (live MX check, published"
            " policy, TLS-RPT readiness)",
            fg="yellow",
            err=True,
        )
    existing = _load(config_path) if config_path.exists() else DeployConfig(config_path)
    if any(d.name == name for d in existing.domains):
        echo(f"error: {config_path}: {name} is already configured", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    default_rua = not rua
    rua = rua or (f"mailto:tlsrpt@{name}",)
    try:
        # A U-label MX name is taken as its A-label, which is what a policy must hold
        # (RFC 8461 §3.2): the tool knows it, so the admin need not (walkthrough #38).
        patterns = tuple(MxPattern.parse(_a_label(normalise_host(m))) for m in mx)
    except ValueError as exc:
        echo(f"error: --mx: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    table = domain_table(DomainConfig(name, patterns, Mode(mode), max_age, rua))
    previous = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    write_atomic(config_path, (previous + ("\n" if previous else "") + table).encode(), 0o644)
    try:
        load_config(config_path)
    except DeployConfigError as exc:
        write_atomic(config_path, previous.encode(), 0o644)
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    # The history starts here (walkthrough #10); the id is given when the records are made.
    added = DomainConfig(name, patterns, Mode(mode), max_age, rua)
    DeployState(state_path(config_path)).note(name, added.policy, "init (not published yet)")
    if as_json:
        print_json(
            {
                "domain": name,
                "config": str(config_path),
                "mode": mode,
                "max_age": max_age,
                "mx": [str(p) for p in patterns],
                "rua": list(rua),
                "next": [f"mtasts records {name}", f"mtasts check {name}"],
            }
        )
        return
    echo(f"added {name} to {config_path} (mode {mode}, max_age {max_age})", fg="green")
    echo("next:")
    echo(f"  1. mtasts records {name}       the two TXT records and the policy to publish")
    echo(
        f"  2. host the policy at https://mta-sts.{name}/.well-known/mta-sts.txt (mtasts records {name} --nginx / --caddy)"
    )
    echo(
        f"  3. mtasts check {name}         prove it works end to end, then read the TLS-RPT reports for two weeks"
    )
    if default_rua:
        echo(
            f"reports go to {rua[0].removeprefix('mailto:')}: that mailbox must exist"
            " (--rua mailto:...,https://... chooses another)"
        )


@click.command()
@click.argument("domain", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "bind", "json"]),
    default="table",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option("--nginx", is_flag=True, help="Print an nginx server block that hosts the policy.")
@click.option("--caddy", is_flag=True, help="Print a Caddy site that hosts the policy.")
@click.option(
    "--policy", "policy_only", is_flag=True, help="Print only the policy file (to save it)."
)
@config_option
@serialised
def records(
    domain: str | None,
    fmt: str,
    as_json: bool,
    nginx: bool,
    caddy: bool,
    policy_only: bool,
    config_path: Path,
) -> None:
    """Print what to publish: TXT records, the policy host, the policy file (the id changes only with it)."""
    if as_json:
        if fmt not in ("table", "json"):
            raise click.UsageError(
                f"choose one output: --json and --format {fmt} cannot go together"
            )
        fmt = "json"  # --json everywhere else; --format json stays for scripts that use it
    chosen = [
        name
        for name, on in (("--nginx", nginx), ("--caddy", caddy), ("--policy", policy_only))
        if on
    ]
    if len(chosen) > 1 or (chosen and fmt != "table"):
        given = chosen + ([f"--format {fmt}"] if fmt != "table" else [])
        raise click.UsageError(f"choose one output: {' and '.join(given)} cannot go together")
    config = _load(config_path)
    domains = [_domain_or_exit(config, domain)] if domain else list(config.domains)
    publications = [publication(config, d) for d in domains]
    for pub in publications:
        if policy_only:
            # Byte for byte what the policy host must serve (RFC 8461 §3.2: CRLF lines).
            sys.stdout.buffer.write(pub.policy_text.encode())
        elif nginx or caddy:
            click.echo(pub.nginx() if nginx else pub.caddy())
        elif fmt == "bind":
            click.echo(pub.bind())
        elif fmt == "table":
            _table(pub)
    if fmt == "json" and not (nginx or caddy):
        click.echo(json.dumps([p.to_json() for p in publications], indent=2))


def _table(pub: Publication) -> None:
    """The records as lines, never a table: a cell cut to the terminal's width ("rua=mailto:
    tlsrpt@examp…") is a wrong DNS record once copied; a long line wraps whole instead."""
    click.echo(f"{pub.domain.name}: publish (policy id {pub.policy_id})")
    rows = pub.to_json()["records"]
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        click.echo(f"  {row['name']:<{width}}  {row['type']}  {row['value']}")
    click.echo(f"policy file, served at https://mta-sts.{pub.domain.name}/.well-known/mta-sts.txt:")
    click.echo(pub.policy_text.replace("\r\n", "\n"))


@click.command()
@click.argument("domain")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(domain: str, config_path: Path, as_json: bool) -> None:
    """Show every change of DOMAIN's policy: when, who, the id, old and new policy."""
    state = DeployState(state_path(config_path))
    changes = state.history(as_asked(domain))
    if not changes:
        _domain_or_exit(_load(config_path), as_asked(domain))  # "not in mtasts.toml", exit 2
    if as_json:
        print_json(
            {"domain": as_asked(domain), "changes": [dataclasses.asdict(c) for c in changes]}
        )
        return
    if not any(c.policy_id for c in changes):
        echo(f"{domain}: no published policy yet (mtasts records {domain} records the first)")
        if not changes:
            return
    table = Table("when (UTC)", "who", "id", "change")
    for change in changes:
        table.add_row(
            change.when,
            change.who,
            change.policy_id or "-",
            f"{change.note}: {_fields(change.new_policy)}"
            if not change.policy_id
            else _summary(change.old_policy, change.new_policy)
            + (f" ({change.note})" if change.note else ""),
        )
    print_table(console(), table)


def _summary(old: str | None, new: str) -> str:
    if old is None:
        return "first policy: " + _fields(new)
    before, after = set(old.splitlines()), set(new.splitlines())
    removed = [f"-{line}" for line in old.splitlines() if line not in after]
    added = [f"+{line}" for line in new.splitlines() if line not in before]
    return " ".join(removed + added)


def _fields(text: str) -> str:
    return ", ".join(line for line in text.splitlines() if not line.startswith("version"))


with_tsig_options = options(
    click.option("--zone", help="The zone to update (default: the domain)."),
    click.option("--tsig-key", help="TSIG key name."),
    click.option(
        "--tsig-secret-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="File holding the base64 TSIG secret (or set MTASTS_TSIG_SECRET).",
    ),
    click.option("--tsig-algorithm", default="hmac-sha256", show_default=True),
)


def _target(
    server: str,
    domain: str,
    zone: str | None,
    tsig_key: str | None,
    tsig_secret_file: Path | None,
    tsig_algorithm: str,
) -> PublishTarget:
    try:
        address = Nameserver.parse(server)
    except ValueError as exc:
        echo(f"error: --server: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    secret = (
        tsig_secret_file.read_text().strip()
        if tsig_secret_file
        else os.environ.get("MTASTS_TSIG_SECRET")
    )
    if tsig_key and not secret:
        echo("error: --tsig-key needs --tsig-secret-file or MTASTS_TSIG_SECRET", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    return PublishTarget(address, zone or domain, tsig_key, secret, tsig_algorithm)


def _publish_one(config: DeployConfig, domain: DomainConfig, target: PublishTarget) -> bool:
    try:
        for line in publish(publication(config, domain), target):
            echo(f"{domain.name}: {line}", fg="green")
    except PublishError as exc:
        echo(f"{domain.name}: error: {exc}", fg="red")
        return False
    return True


def _lab_or_flags(
    lab_dir: Path | None, nameservers: tuple[str, ...], ca_file: Path | None, timeout: float
) -> CheckOptions:
    meta = click.get_current_context(silent=True)
    extra = meta.meta if meta is not None else {}
    probes = int(extra.get("probes") or 1)
    if lab_dir is not None:
        lab = LabClient.from_state(read_state(lab_dir))
        return CheckOptions(
            (lab.nameserver,),
            lab.ca_file,
            extra.get("smtp_port") or lab.smtp_port,
            extra.get("https_port") or lab.https_port,
            timeout,
            probes,
        )
    return CheckOptions(
        tuple(Nameserver.parse(n) for n in nameservers),
        ca_file,
        extra.get("smtp_port") or 25,
        extra.get("https_port") or 443,
        timeout=timeout,
        probes=probes,
    )


def _republish(
    config_path: Path, name: str, note: str, publish_to: dict[str, Any], *, quiet: bool = False
) -> str:
    """Bump the id for the changed policy, then print the records or publish them (--publish);
    ``quiet`` prints nothing (for --json) but still publishes. Returns the new id."""
    config = _load(config_path)
    domain = config.domain(name)
    state = DeployState(state_path(config_path))
    new_id = state.policy_id(domain.name, domain.policy, note=note)
    if quiet:
        if publish_to.get("server") and not _publish_one(
            config, domain, _target(domain=name, **publish_to)
        ):
            sys.exit(EXIT_PROBLEMS)
        return new_id
    if publish_to.get("server"):
        echo(
            f"{name}: policy id {new_id}; serve the new policy before senders see the new id",
            bold=True,
        )
        if not _publish_one(config, domain, _target(domain=name, **publish_to)):
            sys.exit(EXIT_PROBLEMS)
        return new_id
    echo(f"{name}: policy id {new_id}; serve the new policy first, then publish:", bold=True)
    click.echo(Publication(domain, new_id).bind())
    return new_id


def with_publish(func: Any) -> Any:
    func = with_tsig_options(func)
    return click.option(
        "--publish",
        "server",
        metavar="HOST[:PORT]",
        help="Publish the records to this primary server (RFC 2136).",
    )(func)


with_check_options = options(
    click.option(
        "--lab",
        "lab_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Check against a running lab.",
    ),
    click.option(
        "--nameserver", "nameservers", multiple=True, help="HOST[:PORT] for the live check."
    ),
    click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Extra trusted CAs for the live check (a private CA, or the lab's).",
    ),
    click.option("--timeout", type=float, default=10.0, show_default=True),
    # The same probe settings as `mtasts check` (walkthrough #22); kept in ctx.meta so each
    # command's signature stays as it is.
    click.option(
        "--smtp-port",
        type=click.IntRange(1, 65535),
        expose_value=False,
        callback=lambda ctx, _p, v: ctx.meta.__setitem__("smtp_port", v),
        help="Port of the MX hosts for the live check.  [default: 25]",
    ),
    click.option(
        "--https-port",
        type=click.IntRange(1, 65535),
        expose_value=False,
        callback=lambda ctx, _p, v: ctx.meta.__setitem__("https_port", v),
        help="Port of the policy host for the live check.  [default: 443]",
    ),
    click.option(
        "--probes",
        type=click.IntRange(1, 20),
        default=1,
        show_default=True,
        expose_value=False,
        callback=lambda ctx, _p, v: ctx.meta.__setitem__("probes", v),
        help="Probe each MX address N times (a load balancer's bad backend).",
    ),
)


def _gate_or_exit(
    config_path: Path,
    domain: DomainConfig,
    what: str,
    force: bool,
    options: CheckOptions,
    readiness: Readiness,
    as_json: bool = False,
) -> list[str]:
    """The enforce gate on the live deployment and the configured policy; exit 1 when shut.
    Returns what --force skipped."""
    check = asyncio.run(check_domain(domain.name, options))
    state = DeployState(state_path(config_path))
    gate = enforce_gate(check, readiness, domain, state.recorded_id(domain.name, domain.policy))
    if gate.open:
        return []
    if as_json:
        if not force:
            print_json({"domain": domain.name, "change": what, "refused": list(gate.blockers)})
            sys.exit(EXIT_PROBLEMS)
        return list(gate.blockers)
    label = "skipped (--force)" if force else "refused"
    echo(f"{domain.name}: {what} {label}:", fg="yellow" if force else "red", bold=True)
    for blocker in gate.blockers:
        echo(f"  - {blocker}", fg="yellow" if force else "red")
    if not force:
        sys.exit(EXIT_PROBLEMS)
    return list(gate.blockers)


def _changed(
    config_path: Path, name: str, change: str, new_id: str, skipped: list[str]
) -> dict[str, Any]:
    domain = _load(config_path).domain(name)
    return {
        "domain": name,
        "change": change,
        "mode": str(domain.mode),
        "max_age": domain.max_age,
        "policy_id": new_id,
        "records": Publication(domain, new_id).to_json()["records"],
        "skipped": skipped,
    }


@click.command("mode")
@click.argument("domain")
# `none` is accepted only to point at `retire`; the help offers what works.
@click.argument("mode", type=click.Choice([m.value for m in Mode]), metavar="{enforce|testing}")
@config_option
@with_check_options
@click.option(
    "--force",
    is_flag=True,
    help="Change even if the live check or the reports say no (says what it skipped).",
)
@click.option("--db", envvar="MTASTS_DB", help="The TLS-RPT report store (see mtasts reports).")
@large_sender_option
@trust_option
@with_publish
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@serialised
def mode_command(
    domain: str,
    mode: str,
    config_path: Path,
    lab_dir: Path | None,
    nameservers: tuple[str, ...],
    ca_file: Path | None,
    timeout: float,
    force: bool,
    db: str | None,
    large_senders: tuple[str, ...],
    trusted: tuple[str, ...],
    as_json: bool,
    **publish_to: Any,
) -> None:
    """Switch DOMAIN's mode; enforce only after the live check and the TLS-RPT reports are clean."""
    name = as_asked(domain)
    config = _load(config_path)
    current = _domain_or_exit(config, name)
    if mode == "none":
        echo(
            "to withdraw MTA-STS use `mtasts retire` (RFC 8461 §8.3): it also tells you when to remove the records",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    if current.mode.value == mode:
        if as_json:
            print_json({"domain": name, "change": None, "mode": mode})
        else:
            echo(f"{name}: already {mode}; nothing changed")
        return
    if current.mode is Mode.NONE:
        echo(
            f"{name}: was retired (mode none); switching to {mode} cancels the retirement:"
            " keep its records published",
            fg="yellow",
            err=True,
        )
    skipped: list[str] = []
    if mode == "enforce" and current.mode is not Mode.ENFORCE:
        skipped = _gate_or_exit(
            config_path,
            current,
            "enforce",
            force,
            _lab_or_flags(lab_dir, nameservers, ca_file, timeout),
            report_readiness(name, db, large_senders=large_senders, trusted=trusted),
            as_json,
        )
    set_domain_value(config_path, name, "mode", f'"{mode}"')
    note = f"mode {mode}" + (" (forced)" if force else "")
    new_id = _republish(config_path, name, note, publish_to, quiet=as_json)
    if as_json:
        print_json(_changed(config_path, name, f"mode {mode}", new_id, skipped))


@click.command("max-age")
@click.argument("domain")
@click.argument("seconds", type=DURATION)
@config_option
@with_check_options
@click.option("--force", is_flag=True, help="Raise past a week without the enforce gate.")
@click.option("--db", envvar="MTASTS_DB", help="The TLS-RPT report store (see mtasts reports).")
@large_sender_option
@trust_option
@with_publish
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@serialised
def max_age_command(
    domain: str,
    seconds: int,
    config_path: Path,
    lab_dir: Path | None,
    nameservers: tuple[str, ...],
    ca_file: Path | None,
    timeout: float,
    force: bool,
    db: str | None,
    large_senders: tuple[str, ...],
    trusted: tuple[str, ...],
    as_json: bool,
    **publish_to: Any,
) -> None:
    """Ramp DOMAIN's max_age (warns when it is premature; past a week, the enforce gate decides)."""
    name = as_asked(domain)
    config = _load(config_path)
    current = _domain_or_exit(config, name)
    warnings = max_age_gate(current, seconds, clean_days(name, db)).warnings
    for warning in warnings:
        echo(f"warning: {warning}", fg="yellow", err=True)
    skipped: list[str] = []
    if current.mode is Mode.ENFORCE and seconds > max(current.max_age, _LARGE_MAX_AGE):
        # A long max_age under enforce is how long a mistake stays cached by every sender.
        skipped = _gate_or_exit(
            config_path,
            current,
            f"max_age {seconds}",
            force,
            _lab_or_flags(lab_dir, nameservers, ca_file, timeout),
            report_readiness(name, db, large_senders=large_senders, trusted=trusted),
            as_json,
        )
    set_domain_value(config_path, name, "max_age", str(seconds))
    new_id = _republish(config_path, name, f"max_age {seconds}", publish_to, quiet=as_json)
    if as_json:
        document = _changed(config_path, name, f"max_age {seconds}", new_id, skipped)
        print_json({**document, "warnings": list(warnings)})


@click.command("retire")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("domain")
@config_option
@with_publish
@serialised
def retire_command(domain: str, config_path: Path, as_json: bool, **publish_to: Any) -> None:
    """Withdraw MTA-STS safely (RFC 8461 §8.3): mode none now, records removed after the old max_age."""
    name = as_asked(domain)
    config = _load(config_path)
    current = _domain_or_exit(config, name)
    state = DeployState(state_path(config_path))
    now = dt.datetime.now(dt.UTC)
    retired = state.retired(name)
    if retired is None:
        state.retire(name, current.max_age, now)
        set_domain_value(config_path, name, "mode", '"none"')
        _republish(config_path, name, "retire: mode none", publish_to, quiet=as_json)
        retired = (now, current.max_age)
    retirement = Retirement(*retired)
    if as_json:
        print_json(
            {
                "domain": name,
                "mode": "none",
                "retired_at": retirement.retired_at.isoformat(),
                "records_removable_at": retirement.removable_at.isoformat(),
                "status": retirement.status(now),
            }
        )
        return
    echo(f"{name}: {retirement.status(now)}", bold=True)


@click.command("publish")
@click.argument("domain", required=False)
@config_option
@click.option(
    "--server",
    "--publish",
    "server",
    required=True,
    metavar="HOST[:PORT]",
    help="The primary server that accepts dynamic updates.",
)
@with_tsig_options
@serialised
def publish_command(
    domain: str | None,
    config_path: Path,
    server: str,
    zone: str | None,
    tsig_key: str | None,
    tsig_secret_file: Path | None,
    tsig_algorithm: str,
) -> None:
    """Publish the _mta-sts and _smtp._tls records by RFC 2136 update with TSIG, then verify them."""
    config = _load(config_path)
    domains = [_domain_or_exit(config, domain)] if domain else list(config.domains)
    results = [
        _publish_one(
            config,
            item,
            _target(server, item.name, zone, tsig_key, tsig_secret_file, tsig_algorithm),
        )
        for item in domains
    ]
    sys.exit(0 if all(results) else EXIT_PROBLEMS)


__all__: list[Any] = [
    "history",
    "init",
    "max_age_command",
    "mode_command",
    "records",
    "retire_command",
]
