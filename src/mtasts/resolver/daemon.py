"""Run the resolver: listeners, proactive refresh, metrics, and reload on SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtasts.config import ConfigError
from mtasts.net.dns import Resolver

from .answers import KEEP_SECONDS, AnswerLog
from .config import ResolverConfig
from .engine import EngineOptions, PolicyEngine
from .server import ReplySettings, ResolverService, UnixAccess, start_listener
from .store import PolicyStore

log = logging.getLogger("mtasts.resolver")


def reply_settings(config: ResolverConfig, **zone: Any) -> ReplySettings:
    return ReplySettings(
        zone.get("testing", config.testing),
        zone.get("tlsrpt_attributes", config.tlsrpt_attributes),
        dict(config.relays),
        zone.get("request_timeout", config.request_timeout),
    )


def zone_settings(config: ResolverConfig) -> dict[str, ReplySettings]:
    return {name: reply_settings(config, **values) for name, values in config.zones.items()}


def _unix_access(config: ResolverConfig) -> UnixAccess:
    return UnixAccess(config.socket_mode, config.socket_owner, config.socket_group)


def make_store(cache: str | None) -> PolicyStore:
    if cache is not None and cache.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore

        return PostgresStore(cache)
    return PolicyStore(Path(cache) if cache else None)


def trusts_ad(config: ResolverConfig, resolver: Resolver) -> bool:
    """Whether DNSSEC answers (the AD bit) of ``resolver``'s servers may be believed."""
    if config.dane_trust_ad != "loopback":
        return config.dane_trust_ad == "always"
    return bool(resolver.nameservers) and all(
        ipaddress.ip_address(server.address).is_loopback for server in resolver.nameservers
    )


def build(config: ResolverConfig) -> tuple[ResolverService, PolicyStore]:
    store = make_store(config.cache)
    resolver = Resolver(config.nameservers, timeout=config.timeout)
    trust_ad = trusts_ad(config, resolver)
    if not trust_ad and config.dane_trust_ad == "loopback":
        log.warning(
            "DANE answers off: the DNS servers are not on this host, so their DNSSEC"
            " (AD) bit could be forged on the way (RFC 7672 §2); set dane_trust_ad"
        )
    engine = PolicyEngine(
        resolver,
        store,
        EngineOptions(
            config.https_port,
            config.ca_file,
            config.timeout,
            config.grace,
            max_domains=config.max_domains,
            trust_ad=trust_ad,
        ),
    )
    answers = config.answers_path()
    if answers is not None:
        engine.answers = AnswerLog(answers)
    service = ResolverService(engine, reply_settings(config))
    service.zones = zone_settings(config)
    return service, store


def prune_answers(answers: AnswerLog | None) -> None:
    """Drop answers replaced more than a month ago (at start, then daily): the log would
    otherwise grow by a row per change of any domain's answer, for ever."""
    if answers is None:
        return
    try:
        count = answers.prune(time.time() - KEEP_SECONDS)
    except sqlite3.Error as exc:  # the reporter's history must never stop the resolver
        log.warning("answer log not pruned: %s", exc)
        return
    if count:
        log.info("answer log pruned rows=%d", count)


async def probe_dane(resolver: Resolver) -> None:
    """Say whether DANE questions will be asked: only of DNS servers that validate."""
    if await resolver.probe_validation():
        log.info("DNS server validates DNSSEC (AD on the root SOA): DANE questions asked")
    else:
        log.info(
            "DANE questions skipped: the DNS server did not validate the root SOA (no AD bit);"
            " they start with its first validated answer"
        )


async def serve(
    config: ResolverConfig,
    reload: Callable[[], ResolverConfig] | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    service, store = build(config)
    await store.open()
    prune_answers(service.engine.answers)
    # In the background: Postfix must not wait for DNS to get its first answers.
    probe = (
        asyncio.create_task(probe_dane(service.engine.resolver))
        if service.engine.options.trust_ad
        else None
    )
    servers = [
        await start_listener(service, listen, _unix_access(config)) for listen in config.listen
    ]
    if config.metrics:
        host, _, port = config.metrics.rpartition(":")
        servers.append(await asyncio.start_server(service.metrics_client, host, int(port)))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def on_hup() -> None:
        if reload is None:
            return
        try:
            fresh = reload()
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        # Listeners and the cache stay; what Postfix is told follows the new settings.
        service.reconfigure(reply_settings(fresh), zone_settings(fresh))
        log.info(
            "configuration reloaded testing=%s tlsrpt=%s relays=%d",
            fresh.testing,
            fresh.tlsrpt_attributes,
            len(fresh.relays),
        )

    loop.add_signal_handler(signal.SIGHUP, on_hup)

    async def refresher() -> None:
        pruned_at = time.time()
        while True:
            await asyncio.sleep(config.refresh_check)
            with contextlib.suppress(Exception):
                count = await service.engine.refresh_due()
                if count:
                    log.info("refreshed cached policies count=%d", count)
            if time.time() - pruned_at >= 86400:
                pruned_at = time.time()
                prune_answers(service.engine.answers)

    refresh_task = asyncio.create_task(refresher())
    listening = " ".join(
        f"{entry.protocol}:{entry.family}:{entry.address}{f':{entry.port}' if entry.port else ''}"
        for entry in config.listen
    )
    log.info("resolver listening on %s cached=%d", listening, len(store))
    if ready is not None:
        ready()
    await stop.wait()
    refresh_task.cancel()
    if probe is not None:
        probe.cancel()
    for server in servers:
        server.close()
    await store.aclose()
