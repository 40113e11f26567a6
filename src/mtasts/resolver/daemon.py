"""Run the resolver: listeners, proactive refresh, metrics, and reload on SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtasts.net.dns import Resolver

from .config import ConfigError, ResolverConfig
from .engine import EngineOptions, PolicyEngine
from .server import ReplySettings, ResolverService, start_listener
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


def make_store(cache: str | None) -> PolicyStore:
    if cache is not None and cache.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore

        return PostgresStore(cache)
    return PolicyStore(Path(cache) if cache else None)


def build(config: ResolverConfig) -> tuple[ResolverService, PolicyStore]:
    store = make_store(config.cache)
    engine = PolicyEngine(
        Resolver(config.nameservers, timeout=config.timeout),
        store,
        EngineOptions(config.https_port, config.ca_file, config.timeout, config.grace),
    )
    service = ResolverService(engine, reply_settings(config))
    service.zones = zone_settings(config)
    return service, store


async def serve(config: ResolverConfig, reload: Callable[[], ResolverConfig] | None = None,
                ready: Callable[[], None] | None = None) -> None:  # fmt: skip
    service, store = build(config)
    await store.open()
    servers = [await start_listener(service, listen) for listen in config.listen]
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
        service.settings, service.zones = reply_settings(fresh), zone_settings(fresh)
        log.info(
            "configuration reloaded testing=%s tlsrpt=%s relays=%d",
            fresh.testing,
            fresh.tlsrpt_attributes,
            len(fresh.relays),
        )

    loop.add_signal_handler(signal.SIGHUP, on_hup)

    async def refresher() -> None:
        while True:
            await asyncio.sleep(config.refresh_check)
            with contextlib.suppress(Exception):
                count = await service.engine.refresh_due()
                if count:
                    log.info("refreshed cached policies count=%d", count)

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
    for server in servers:
        server.close()
    await store.aclose()
