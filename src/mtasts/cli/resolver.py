"""``mtasts resolver``: the MTA-STS policy daemon for Postfix, and a one-off query."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from mtasts.config import ConfigError
from mtasts.files import masked
from mtasts.net.dns import Nameserver
from mtasts.net.loop import run
from mtasts.resolver.config import ResolverConfig, load
from mtasts.resolver.daemon import build, run_workers, serve
from mtasts.resolver.postfix import TestingAnswer, policy_reply
from mtasts.resolver.server import Listen, policy_domain
from mtasts.sts import Mode

from .output import EXIT_USAGE, echo, options, print_json, setup_logging


def _config(config_file: Path | None, lab_dir: Path | None, **flags: Any) -> ResolverConfig:
    """The configuration at start: a bad one is a one-line usage error."""
    try:
        return _read_config(config_file, lab_dir, **flags)
    except ConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        if config_file is not None and not config_file.exists():
            echo(
                '  a minimal one: [resolver] with listen = ["socketmap:inet:127.0.0.1:8461"]'
                ' and cache = "/var/lib/mtasts/resolver-cache.sqlite" (docs/resolver.md lists'
                " every key); or run without --config for those defaults",
                err=True,
            )
        sys.exit(EXIT_USAGE)


def _read_config(config_file: Path | None, lab_dir: Path | None, **flags: Any) -> ResolverConfig:
    """The file, the lab and the flags merged; ConfigError says what is wrong (a reload on
    SIGHUP keeps the running configuration then, rather than exiting)."""
    try:
        base = load(config_file) if config_file else ResolverConfig()
        if lab_dir is not None:
            # Imported here: the lab brings dkimpy and dnspython's resolver, a quarter of a
            # second of every daemon start that never uses them.
            from mtasts.lab.runtime import LabClient, read_state

            lab = LabClient.from_state(read_state(lab_dir))
            base = base.merged(
                nameservers=(lab.nameserver,), ca_file=lab.ca_file, https_port=lab.https_port
            )
        overrides: dict[str, Any] = dict(flags)
        if flags.get("cache") == ":memory:":
            base, overrides["cache"] = dataclasses.replace(base, cache=None), None
        if flags.get("listen"):
            overrides["listen"] = tuple(Listen.parse(v) for v in flags["listen"])
        if flags.get("nameservers"):
            overrides["nameservers"] = tuple(Nameserver.parse(v) for v in flags["nameservers"])
        if flags.get("relays"):
            pairs = [r.split("=", 1) for r in flags["relays"]]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(
                    "--relay takes NEXTHOP=DOMAIN, e.g. [smtp.relay.example]:587=relay.example"
                )
            overrides["relays"] = {k.lower(): v.lower() for k, v in pairs}
        if flags.get("testing"):
            overrides["testing"] = TestingAnswer(flags["testing"])
        return base.merged(**overrides).check()
    except ConfigError:
        raise
    except (ValueError, OSError, KeyError) as exc:
        raise ConfigError(str(exc)) from None


common = options(
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="mtasts.toml with a [resolver] table.",
    ),
    click.option(
        "--cache",
        envvar="MTASTS_RESOLVER_CACHE",
        help="SQLite file (default), postgresql://... (shared by several MTAs), or :memory:;"
        " a URL with a password belongs in MTASTS_RESOLVER_CACHE, not on the command line.",
    ),
    click.option(
        "--nameserver",
        "nameservers",
        multiple=True,
        help="HOST[:PORT] instead of the system resolver.",
    ),
    click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Extra trusted CAs for policy hosts.",
    ),
    click.option("--https-port", type=int),
    click.option("--timeout", type=float, help="Seconds for each DNS lookup and policy fetch."),
    click.option(
        "--testing",
        type=click.Choice([t.value for t in TestingAnswer]),
        help="What a testing policy becomes for Postfix.",
    ),
    click.option(
        "--relay",
        "relays",
        multiple=True,
        help="NEXTHOP=DOMAIN: the policy domain of a smart host (RFC 8461 §3.4).",
    ),
    click.option(
        "--lab",
        "lab_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Use a running lab's DNS, CA and ports.",
    ),
)


@click.group()
def resolver() -> None:
    """Enforce other domains' MTA-STS policies on Postfix's outbound mail."""


@resolver.command("run")
@common
@click.option(
    "--listen",
    multiple=True,
    help="socketmap:inet:HOST:PORT (default 127.0.0.1:8461), socketmap:unix:PATH, tcp:inet:HOST:PORT.",
)
@click.option("--metrics", help="HOST:PORT to serve Prometheus metrics on.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes sharing the listeners and the cache (default 1; one per core for cold bursts).",
)
@click.option(
    "--tlsrpt-attributes",
    is_flag=True,
    default=None,
    help="Add Postfix 3.10 TLSRPT attributes to replies.",
)
def resolver_run(config_file: Path | None, lab_dir: Path | None, **flags: Any) -> None:
    """Run the policy daemon in the foreground (SIGHUP reloads the --config file)."""
    setup_logging()
    config = _config(config_file, lab_dir, **flags)

    def reload() -> ResolverConfig:
        return _read_config(config_file, lab_dir, **flags)

    try:
        if config.workers > 1:
            sys.exit(run_workers(config, reload if config_file else None))
        run(serve(config, reload if config_file else None))
    except OSError as exc:
        echo(f"error: the resolver cannot listen: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg"):
            raise
        # A PostgreSQL cache that refuses: one line, its password hidden (review #27).
        line = f"error: cannot open the policy cache {config.cache}: {exc}".splitlines()[0]
        echo(masked(config.cache or "", line), fg="red", err=True)
        sys.exit(EXIT_USAGE)


@resolver.command("query")
@common
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def resolver_query(
    config_file: Path | None, lab_dir: Path | None, key: str, as_json: bool, **flags: Any
) -> None:
    """Print what Postfix would be told for KEY (a next-hop domain) and why."""
    config = _config(config_file, lab_dir, **flags)
    service, store = build(config)
    service.engine.answers = None  # a question from the command line is not Postfix's
    domain = policy_domain(key, config.relays)
    if domain is None:
        if as_json:
            print_json({"key": key, "reply": None, "why": "no policy domain"})
            return
        click.echo(f"{key}: NOTFOUND (no policy domain: bracketed next hop or parent-zone key)")
        return

    async def ask() -> Any:
        await store.open()
        try:
            return await service.engine.lookup(domain)
        finally:
            await store.aclose()

    lookup = asyncio.run(ask())
    reply = policy_reply(lookup.cached, config.testing, config.tlsrpt_attributes, lookup.dane)
    if as_json:
        cached = lookup.cached
        print_json(
            {
                "key": key,
                "domain": domain,
                "reply": f"OK {reply}" if reply else "NOTFOUND",
                "why": lookup.reason,
                "source": lookup.source,
                "dane": lookup.dane,
                "policy": None
                if cached is None
                else {
                    "id": cached.policy_id,
                    "mode": str(cached.policy.mode),
                    "mx": [str(p) for p in cached.policy.mx],
                    "max_age": cached.policy.max_age,
                    "fetched_at": cached.fetched_at,
                    "expires_at": cached.expires_at,
                },
            }
        )
        store.close()
        return
    click.echo(f"{key}: {'OK ' + reply if reply else 'NOTFOUND'}")
    click.echo(f"  why: {lookup.reason} (source: {lookup.source})")
    if (
        reply is None
        and lookup.cached is not None
        and lookup.cached.policy.mode is Mode.TESTING
        and config.testing is TestingAnswer.NONE
    ):
        click.echo(
            '  testing policies are answered NOTFOUND (testing = "none"): Postfix cannot'
            ' "deliver and report", so its own TLS settings apply; "may" or "secure" change that'
        )
    if lookup.cached is not None:
        cached = lookup.cached
        fetched = dt.datetime.fromtimestamp(cached.fetched_at, dt.UTC)
        expires = dt.datetime.fromtimestamp(cached.expires_at, dt.UTC)
        click.echo(
            f"  policy id {cached.policy_id}, mode {cached.policy.mode}, mx {', '.join(str(p) for p in cached.policy.mx)}"
        )
        click.echo(
            f"  fetched {fetched:%Y-%m-%d %H:%M:%S} UTC, expires {expires:%Y-%m-%d %H:%M:%S} UTC"
        )
    store.close()
