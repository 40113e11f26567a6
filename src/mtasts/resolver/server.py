"""The daemon's listeners: Postfix socketmap (netstrings) and tcp_table, on TCP or Unix sockets.

A malformed request gets a protocol error reply and its connection is closed;
nothing a client sends can stop the daemon or disturb other connections. A
lookup that outlives the request timeout answers NOTFOUND (RFC 8461 §5: no
policy known means deliver as before) while the fetch goes on for the next mail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from .engine import Lookup, PolicyEngine, Standing
from .postfix import (
    NetstringError,
    SocketmapDecoder,
    TestingAnswer,
    netstring,
    policy_reply,
    tcp_table_reply,
)

log = logging.getLogger("mtasts.resolver.server")
# A client may queue this many requests before we stop reading its socket (it must read
# our replies first), and stay idle this long; Postfix reconnects when it needs to.
MAX_QUEUED = 100
IDLE_TIMEOUT = 300.0
MAX_CONNECTIONS = 1000
_MAX_PREPARED = 100_000  # finished replies remembered, keyed by what Postfix asked


@dataclass
class ReplySettings:
    testing: TestingAnswer = TestingAnswer.NONE
    tlsrpt: bool = False
    # RFC 8461 §3.4: mail relayed through a smart host uses the relay's domain as policy domain.
    relays: dict[str, str] = field(default_factory=dict)
    request_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Listen:
    """``socketmap:inet:HOST:PORT``, ``socketmap:unix:PATH``, ``tcp:inet:HOST:PORT`` or ``tcp:unix:PATH``."""

    protocol: str
    family: str
    address: str
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Listen:
        parts = text.split(":", 2)
        if (
            len(parts) != 3
            or parts[0] not in ("socketmap", "tcp")
            or parts[1] not in ("inet", "unix")
        ):
            raise ValueError(
                f"{text!r}: expected socketmap:inet:HOST:PORT, socketmap:unix:PATH, tcp:inet:HOST:PORT or tcp:unix:PATH"
            )
        if parts[1] == "unix":
            return cls(parts[0], "unix", parts[2])
        host, _, port = parts[2].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: the address must be HOST:PORT")
        return cls(parts[0], "inet", host.strip("[]"), int(port))


def policy_domain(key: str, relays: dict[str, str]) -> str | None:
    """The domain whose policy applies to a Postfix next-hop key, or None (answer NOTFOUND)."""
    key = key.strip().lower()
    if key in relays:
        return relays[key]
    if key.startswith(".") or not key:
        return None  # ".parent" is a parent-zone probe, which RFC 8461 §3.4 rules out
    if key.startswith("["):
        # "[host]" or "[host]:port": a smart host or transport next hop. RFC 8461 §3.4: the
        # policy domain is the smart host's own domain (as postfix-mta-sts-resolver applies).
        host, closed, port = key[1:].partition("]")
        if not closed or (port and not (port[:1] == ":" and port[1:].isdigit())):
            return None
        if host.startswith("ipv6:") or _is_address(host):
            return None  # an address literal has no domain, so no policy
        return host.rstrip(".") or None
    domain = key.rsplit(":", 1)[0] if key.count(":") == 1 else key
    return domain.rstrip(".") or None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class _Prepared:
    """A finished netstring reply to one request, valid while ``standing`` still holds ``lookup``."""

    payload: bytes
    outcome: str  # "ok" | "notfound", for the request counters
    standing: Standing | None  # None: the key has no policy domain, the reply never changes
    lookup: Lookup | None


class ResolverService:
    def __init__(self, engine: PolicyEngine, settings: ReplySettings) -> None:
        self.engine = engine
        self.settings = settings
        # Per socketmap map name (``socketmap:inet:HOST:PORT:NAME``): settings overriding the default.
        self.zones: dict[str, ReplySettings] = {}
        self.started = time.time()
        self.requests: dict[str, int] = {"ok": 0, "notfound": 0, "error": 0, "timeout": 0}
        # Per request, as the bytes Postfix sent: the reply, prepared once per answer.
        # Bounded: the keys are whatever Postfix (so whoever sends mail through it) asks.
        self._prepared: dict[bytes, _Prepared] = {}
        self.connections = 0
        # What /metrics shows: this process's counters, or (workers) every worker's added up.
        self.gather: Callable[[], Counters] = self.counters

    def reconfigure(self, settings: ReplySettings, zones: dict[str, ReplySettings]) -> None:
        """New reply settings (SIGHUP): every prepared reply was formatted with the old ones."""
        self.settings, self.zones = settings, zones
        self._prepared = {}

    def settings_for(self, zone: str) -> ReplySettings:
        return self.zones.get(zone, self.settings)

    async def answer(self, key: str, zone: str = "") -> str | None:
        settings = self.settings_for(zone)
        domain = policy_domain(key, settings.relays)
        if domain is None:
            return None
        # The hot path: an answer from the last minute, no task, no I/O.
        remembered = self.engine.remembered(domain)
        if remembered is not None:
            return self._reply(remembered, settings)
        try:
            lookup = await asyncio.wait_for(
                asyncio.shield(self.engine.lookup(domain)), settings.request_timeout
            )
        except TimeoutError:
            self.requests["timeout"] += 1
            log.warning(
                "lookup timed out domain=%r; answering NOTFOUND while the fetch goes on", domain
            )
            return None
        return self._reply(lookup, settings)

    def prepared(self, frame: bytes) -> bytes | None:
        """The reply to ``frame`` (one whole request as sent) if one is prepared and still right.

        The cached-lookup path: one dict lookup and one clock read, no decoding, no
        formatting, nothing allocated.
        """
        entry = self._prepared.get(frame)
        if entry is None:
            return None
        standing = entry.standing
        if standing is not None:
            if standing.answer is not entry.lookup or self.engine.clock() >= standing.until:
                return None
            self.engine.metrics.lookups["memory"] += 1
        self.requests[entry.outcome] += 1
        return entry.payload

    def answer_now(self, frame: bytes, zone: str, key: str) -> bytes | None:
        """The reply when it needs no I/O (a standing answer), prepared for next time; else None."""
        settings = self.settings_for(zone)
        target = policy_domain(key, settings.relays)
        if target is None:
            entry = _Prepared(encode_reply(None), "notfound", None, None)
        else:
            standing = self.engine.standing(target)
            if standing is None or standing.answer is None:
                return None
            value = self._reply(standing.answer, settings)
            outcome = "ok" if value else "notfound"
            entry = _Prepared(encode_reply(value), outcome, standing, standing.answer)
        if len(self._prepared) >= _MAX_PREPARED:
            self._prepared = {}  # cheap to rebuild: each entry is one formatted reply
        self._prepared[frame] = entry
        self.requests[entry.outcome] += 1
        return entry.payload

    def _reply(self, lookup: Lookup, settings: ReplySettings) -> str | None:
        return policy_reply(lookup.cached, settings.testing, settings.tlsrpt, lookup.dane)

    async def tcp_table_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self.connections += 1
        try:
            while line := await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT):
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                verb, _, key = text.partition(" ")
                if verb.lower() != "get" or not key:
                    self.requests["error"] += 1
                    writer.write(b"400 expected 'get KEY'\n")
                else:
                    value = await self.answer(unquote(key))
                    self.requests["ok" if value else "notfound"] += 1
                    writer.write(tcp_table_reply(value))
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    def counters(self) -> Counters:
        """This process's counters, as :func:`metrics_text` shows them (and workers add up)."""
        m = self.engine.metrics
        return {
            "requests": dict(self.requests),
            "lookups": dict(m.lookups),
            "fetch_failures": dict(m.fetch_failures),
            "fetches": {"": m.fetches},
            "cached_policies": {"": len(self.engine.store)},
            "dane_questions": {"": int(self.engine.asks_dane)},
        }

    def metrics(self) -> str:
        return metrics_text(self.gather())

    async def metrics_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = self.metrics().encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()


# name -> label value -> count; the label is "" for an unlabelled metric.
Counters = dict[str, dict[str, int]]
# Added up over workers; the gauges take the largest (each worker holds its own memory).
_GAUGES = ("cached_policies", "dane_questions")
_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("requests", "counter", "outcome", "Postfix requests by outcome."),
    ("lookups", "counter", "source", "Policy lookups by where the answer came from."),
    ("fetch_failures", "counter", "reason", "Failed policy fetches by reason."),
    ("fetches", "counter", "", "Policy fetches."),
    ("cached_policies", "gauge", "", "Policies held in memory (by the fullest worker)."),
    (
        "dane_questions",
        "gauge",
        "",
        "1 when DANE's MX and TLSA questions are asked: the DNS server is trusted and has"
        " validated an answer.",
    ),
)


def merge_counters(parts: list[Counters]) -> Counters:
    total: Counters = {}
    for part in parts:
        for name, values in part.items():
            into = total.setdefault(name, {})
            for label, count in values.items():
                if name in _GAUGES:
                    into[label] = max(into.get(label, 0), count)
                else:
                    into[label] = into.get(label, 0) + count
    return total


def metrics_text(counters: Counters) -> str:
    """The Prometheus text exposition of ``counters``."""
    lines = []
    for name, kind, label, text in _METRICS:
        full = f"mtasts_resolver_{name}{'_total' if kind == 'counter' else ''}"
        lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
        values = counters.get(name, {})
        if not label:
            lines.append(f"{full} {values.get('', 0)}")
            continue
        keys = values if name == "requests" else sorted(values)
        lines += [f'{full}{{{label}="{key}"}} {values[key]}' for key in keys]
    return "\n".join(lines) + "\n"


def encode_reply(value: str | None) -> bytes:
    return netstring(f"OK {value}" if value else "NOTFOUND ")


class SocketmapProtocol(asyncio.Protocol):
    """Socketmap without a coroutine per request: cached answers are written from data_received.

    A request that needs DNS or HTTPS runs as a task; requests behind it wait in
    order, so replies always come back in the order Postfix asked.
    """

    def __init__(self, service: ResolverService) -> None:
        self.service = service
        self.decoder = SocketmapDecoder()
        self.queue: collections.deque[tuple[bytes, str, str]] = collections.deque()
        self.busy = False
        self.task: asyncio.Future[None] | None = None  # held so it is not collected mid-flight
        self.transport: asyncio.Transport | None = None
        self.reading = True
        self.writing = True
        # Idleness is noticed by a timer every quarter of IDLE_TIMEOUT, not re-armed per
        # request: a request only clears a flag.
        self.idle: asyncio.TimerHandle | None = None
        self.active = False
        self.quiet = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.service.connections >= MAX_CONNECTIONS:
            log.warning(
                "socketmap connection refused: %d connections open", self.service.connections
            )
            transport.close()
            return
        self.service.connections += 1
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.service.connections -= 1
            self.idle.cancel()
            self.idle = None

    def _arm(self) -> None:
        self.idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT / 4, self._idle_check)

    def _idle_check(self) -> None:
        """Close after four quiet quarters in a row: idle between IDLE_TIMEOUT and 1.25 times it."""
        self.quiet = 0 if self.active or self.busy else self.quiet + 1
        self.active = False
        if self.quiet >= 4:
            if self.transport is not None:
                self.transport.close()
            return
        self._arm()

    def pause_writing(self) -> None:
        # The client does not read its replies: stop taking its requests until it does.
        self.writing = False
        self._flow()

    def resume_writing(self) -> None:
        self.writing = True
        self._flow()
        self._drain()

    def _flow(self) -> None:
        """Read only while the client reads our replies and its queue is short (back-pressure)."""
        want = self.writing and len(self.queue) < MAX_QUEUED
        if self.transport is None or want == self.reading or self.transport.is_closing():
            return
        self.reading = want
        (self.transport.resume_reading if want else self.transport.pause_reading)()

    def data_received(self, data: bytes) -> None:
        self.active = True
        # Postfix asks one request at a time and waits: a read is usually exactly one
        # request, and for a domain asked before its reply is ready-made.
        if not self.queue and not self.busy and self.writing and not self.decoder.buffer:
            payload = self.service.prepared(data)
            if payload is not None:
                self._write(payload)
                return
        self.decoder.feed(data)
        try:
            while (request := self.decoder.next_frame()) is not None:
                self.queue.append(request)
        except NetstringError as exc:
            self._refuse(str(exc))
            return
        self._drain()
        self._flow()

    @property
    def buffer(self) -> bytearray:
        """The bytes received and not yet decoded (for tools that replay framing)."""
        return self.decoder.buffer

    @buffer.setter
    def buffer(self, value: bytearray) -> None:
        self.decoder.buffer = value

    def _drain(self) -> None:
        while self.queue and not self.busy and self.writing:
            frame, zone, key = self.queue.popleft()
            payload = self.service.prepared(frame) or self.service.answer_now(frame, zone, key)
            if payload is None:
                self.busy = True
                self.task = asyncio.ensure_future(self._slow(zone, key))
                return
            self._write(payload)

    async def _slow(self, zone: str, key: str) -> None:
        try:
            value = await self.service.answer(key, zone)
        except Exception:  # a bug must not take the connection's queue down with it
            log.exception("lookup failed key=%r", key)
            value = None
        self.busy = False
        self.service.requests["ok" if value else "notfound"] += 1
        self._write(encode_reply(value))
        self._drain()
        self._flow()

    def _write(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)

    def _refuse(self, reason: str) -> None:
        self.service.requests["error"] += 1
        log.warning("malformed socketmap request: %s", reason)
        if self.transport is not None:
            self.transport.write(netstring(f"PERM {reason}"))
            self.transport.close()


async def start_listener(
    service: ResolverService, listen: Listen, sockets: list[socket.socket]
) -> list[asyncio.AbstractServer]:
    """Serve ``listen``'s protocol on its sockets, bound already (see :mod:`.sockets`)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    for sock in sockets:
        if listen.protocol == "socketmap" and listen.family == "inet":
            servers.append(await loop.create_server(lambda: SocketmapProtocol(service), sock=sock))
        elif listen.protocol == "socketmap":
            servers.append(
                await loop.create_unix_server(lambda: SocketmapProtocol(service), sock=sock)
            )
        elif listen.family == "inet":
            servers.append(await asyncio.start_server(service.tcp_table_client, sock=sock))
        else:
            servers.append(await asyncio.start_unix_server(service.tcp_table_client, sock=sock))
    return servers
