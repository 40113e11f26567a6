"""Run the resolver: listeners, proactive refresh, metrics, and reload on SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtasts.config import ConfigError
from mtasts.net.dns import Resolver
from mtasts.net.loop import run
from mtasts.net.tls import client_context

from .answers import KEEP_SECONDS, AnswerLog
from .config import ResolverConfig
from .engine import EngineOptions, PolicyEngine
from .server import Listen, ReplySettings, ResolverService, merge_counters, start_listener
from .sockets import UnixAccess, bind
from .store import PolicyStore
from .workers import Board, Place, Supervisor

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


def _metrics_sockets(config: ResolverConfig) -> list[socket.socket]:
    if not config.metrics:
        return []
    host, _, port = config.metrics.rpartition(":")
    return bind(Listen("tcp", "inet", host.strip("[]"), int(port)), UnixAccess())


def run_workers(config: ResolverConfig, reload: Callable[[], ResolverConfig] | None) -> int:
    """``config.workers`` processes on the same sockets (see :mod:`.workers`); the exit status."""

    async def try_store() -> None:
        store = make_store(config.cache)
        await store.open()
        await store.aclose()

    # A cache that cannot open is one error now, not workers dying one after another.
    asyncio.run(try_store())
    access = _unix_access(config)
    # A Unix socket is bound once and shared; each worker binds its own inet sockets.
    unix = {
        number: bind(listen, access)
        for number, listen in enumerate(config.listen)
        if listen.family == "unix"
    }

    def bind_worker(index: int) -> tuple[list[list[socket.socket]], list[socket.socket]]:
        listeners = [
            unix[number] if number in unix else bind(listen, access, reuse_port=True)
            for number, listen in enumerate(config.listen)
        ]
        return listeners, _metrics_sockets(config) if index == 0 else []

    # What a worker tells Postfix follows the last SIGHUP, also in a worker started after
    # it (a replacement): the parent rereads the file too, for the workers it forks later.
    latest = [config]

    def reloaded() -> None:
        if reload is not None:
            with contextlib.suppress(ConfigError):  # each worker logs why
                latest[0] = reload()

    async def work(place: Place) -> None:
        await serve(config, reload, place=place, settings=latest[0])

    return Supervisor(config.workers, bind_worker, work, run, reloaded).start()


async def serve(
    config: ResolverConfig,
    reload: Callable[[], ResolverConfig] | None = None,
    ready: Callable[[], None] | None = None,
    place: Place | None = None,
    settings: ResolverConfig | None = None,
) -> None:
    """One resolver process: every listener, or one worker's share of them (``place``);
    ``settings``, when given, says what to tell Postfix (a reload since ``config``)."""
    service, store = build(config)
    if settings is not None and settings is not config:
        service.reconfigure(reply_settings(settings), zone_settings(settings))
    await store.open()
    if place is None:
        access = _unix_access(config)
        listeners = [bind(listen, access) for listen in config.listen]
        place = Place(0, 1, listeners, _metrics_sockets(config))
    # Loading the trust store takes tens of milliseconds: at start, not in the first
    # lookups after it, which would all wait behind it.
    client_context(config.ca_file)
    if place.leader:
        prune_answers(service.engine.answers)
    # In the background: Postfix must not wait for DNS to get its first answers.
    probe = (
        asyncio.create_task(probe_dane(service.engine.resolver))
        if service.engine.options.trust_ad
        else None
    )
    servers = [
        server
        for listen, sockets in zip(config.listen, place.listeners, strict=True)
        for server in await start_listener(service, listen, sockets)
    ]
    for sock in place.metrics:
        servers.append(await asyncio.start_server(service.metrics_client, sock=sock))
    board = place.board
    if board is not None:
        others = range(1, board.count)
        service.gather = lambda: merge_counters(
            [service.counters(), *(board.read(index) for index in others)]
        )
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
    # A worker starts with SIGHUP blocked (see workers.py): one sent meanwhile is held by
    # the kernel and handled now, not lost and not fatal.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    async def refresher() -> None:
        pruned_at = time.time()
        while True:
            await asyncio.sleep(config.refresh_check)
            with contextlib.suppress(Exception):
                if place.count > 1:
                    await store.sync()  # policies the other workers fetched are due too
                count = await service.engine.refresh_due()
                if count:
                    log.info("refreshed cached policies count=%d", count)
            if time.time() - pruned_at >= 86400:
                pruned_at = time.time()
                prune_answers(service.engine.answers)

    async def poster(board: Board) -> None:
        while True:
            board.post(place.index, service.counters())
            await asyncio.sleep(1.0)

    tasks = []
    if place.leader:
        tasks.append(asyncio.create_task(refresher()))
    elif board is not None:
        tasks.append(asyncio.create_task(poster(board)))
    listening = " ".join(
        f"{entry.protocol}:{entry.family}:{entry.address}{f':{entry.port}' if entry.port else ''}"
        for entry in config.listen
    )
    worker = f" worker={place.index + 1}/{place.count}" if place.count > 1 else ""
    log.info("resolver listening on %s cached=%d%s", listening, len(store), worker)
    if ready is not None:
        ready()
    await stop.wait()
    for task in tasks:
        task.cancel()
    if probe is not None:
        probe.cancel()
    for server in servers:
        server.close()
    await store.aclose()
