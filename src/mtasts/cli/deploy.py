"""``mtasts init``, ``records`` and ``history``: configure your domains and what to publish."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mtasts.deploy.config import (
    DeployConfig,
    DeployConfigError,
    DomainConfig,
    domain_table,
    load_config,
)
from mtasts.deploy.records import Publication
from mtasts.deploy.state import DeployState, state_path
from mtasts.sts import Mode, MxPattern

from .output import EXIT_USAGE, console, echo

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("mtasts.toml"),
    show_default=True, envvar="MTASTS_CONFIG", help="The configuration file.",
)  # fmt: skip


def _load(path: Path) -> DeployConfig:
    try:
        return load_config(path)
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
    type=int,
    default=86400,
    show_default=True,
    help="Seconds senders may cache the policy.",
)
@config_option
def init(
    domain: str,
    mx: tuple[str, ...],
    rua: tuple[str, ...],
    mode: str,
    max_age: int,
    config_path: Path,
) -> None:
    """Add DOMAIN to the configuration, starting in testing with a one-day max_age."""
    name = domain.lower().rstrip(".")
    existing = _load(config_path) if config_path.exists() else DeployConfig(config_path)
    if any(d.name == name for d in existing.domains):
        echo(f"error: {config_path}: {name} is already configured", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    rua = rua or (f"mailto:tlsrpt@{name}",)
    try:
        patterns = tuple(MxPattern.parse(m.lower().rstrip(".")) for m in mx)
    except ValueError as exc:
        echo(f"error: --mx: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    table = domain_table(DomainConfig(name, patterns, Mode(mode), max_age, rua))
    previous = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    config_path.write_text(previous + ("\n" if previous else "") + table, encoding="utf-8")
    try:
        load_config(config_path)
    except DeployConfigError as exc:
        config_path.write_text(previous, encoding="utf-8")
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    echo(f"added {name} to {config_path} (mode {mode}, max_age {max_age})", fg="green")
    echo("next:")
    echo(f"  1. mtasts records {name}       the two TXT records and the policy to publish")
    echo(
        f"  2. host the policy at https://mta-sts.{name}/.well-known/mta-sts.txt (mtasts records {name} --nginx / --caddy)"
    )
    echo(
        f"  3. mtasts check {name}         prove it works end to end, then read the TLS-RPT reports for two weeks"
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
@click.option("--nginx", is_flag=True, help="Print an nginx server block that hosts the policy.")
@click.option("--caddy", is_flag=True, help="Print a Caddy site that hosts the policy.")
@config_option
def records(domain: str | None, fmt: str, nginx: bool, caddy: bool, config_path: Path) -> None:
    """Print what to publish: TXT records, the policy host, the policy file (the id changes only with it)."""
    config = _load(config_path)
    try:
        domains = [config.domain(domain)] if domain else list(config.domains)
    except DeployConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    publications = [publication(config, d) for d in domains]
    for pub in publications:
        if nginx or caddy:
            click.echo(pub.nginx() if nginx else pub.caddy())
        elif fmt == "bind":
            click.echo(pub.bind())
        elif fmt == "table":
            _table(pub)
    if fmt == "json" and not (nginx or caddy):
        click.echo(json.dumps([p.to_json() for p in publications], indent=2))


def _table(pub: Publication) -> None:
    table = Table(
        "name", "type", "value", title=f"{pub.domain.name}: publish (policy id {pub.policy_id})"
    )
    for row in pub.to_json()["records"]:
        table.add_row(row["name"], row["type"], row["value"])
    console().print(table)
    click.echo(f"policy file, served at https://mta-sts.{pub.domain.name}/.well-known/mta-sts.txt:")
    click.echo(pub.policy_text.replace("\r\n", "\n"))


@click.command()
@click.argument("domain")
@config_option
def history(domain: str, config_path: Path) -> None:
    """Show every change of DOMAIN's policy: when, who, the id, old and new policy."""
    state = DeployState(state_path(config_path))
    changes = state.history(domain.lower().rstrip("."))
    if not changes:
        echo(f"{domain}: no published policy yet (mtasts records {domain} records the first)")
        return
    table = Table("when (UTC)", "who", "id", "change")
    for change in changes:
        table.add_row(
            change.when,
            change.who,
            change.policy_id,
            _summary(change.old_policy, change.new_policy),
        )
    console().print(table)


def _summary(old: str | None, new: str) -> str:
    if old is None:
        return "first policy: " + _fields(new)
    before, after = set(old.splitlines()), set(new.splitlines())
    removed = [f"-{line}" for line in old.splitlines() if line not in after]
    added = [f"+{line}" for line in new.splitlines() if line not in before]
    return " ".join(removed + added)


def _fields(text: str) -> str:
    return ", ".join(line for line in text.splitlines() if not line.startswith("version"))


__all__: list[Any] = ["history", "init", "records"]
