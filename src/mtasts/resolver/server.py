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
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from .engine import Lookup, PolicyEngine
from .postfix import NetstringError, TestingAnswer, netstring, policy_reply, tcp_table_reply

log = logging.getLogger("mtasts.resolver.server")
_MAX_NETSTRING = 100_000  # Postfix's socketmap limit


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
    if key.startswith("[") or key.startswith(".") or not key:
        # "[host]" skips MX lookup (no policy domain), ".parent" is a parent-zone probe,
        # which RFC 8461 §3.4 rules out.
        return None
    domain = key.rsplit(":", 1)[0] if key.count(":") == 1 else key
    return domain.rstrip(".") or None


class ResolverService:
    def __init__(self, engine: PolicyEngine, settings: ReplySettings) -> None:
        self.engine = engine
        self.settings = settings
        # Per socketmap map name (``socketmap:inet:HOST:PORT:NAME``): settings overriding the default.
        self.zones: dict[str, ReplySettings] = {}
        self.started = time.time()
        self.requests: dict[str, int] = {"ok": 0, "notfound": 0, "error": 0, "timeout": 0}
        # Per request key: the finished reply, valid while the same Lookup and settings stand.
        self._wire: dict[tuple[str, str], tuple[str, Lookup, ReplySettings, bytes]] = {}

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
                "lookup timed out domain=%s; answering NOTFOUND while the fetch goes on", domain
            )
            return None
        return self._reply(lookup, settings)

    _MISS = object()

    def answer_now(self, key: str, zone: str = "") -> bytes | object:
        """The finished netstring reply when it needs no I/O (a recent answer), else ``_MISS``."""
        settings = self.settings_for(zone)
        memo = self._wire.get((zone, key))
        if memo is not None:
            domain, lookup, memo_settings, payload = memo
            if memo_settings is settings and self.engine.remembered(domain) is lookup:
                return payload
        target = policy_domain(key, settings.relays)
        if target is None:
            return encode_reply(None)
        remembered = self.engine.remembered(target)
        if remembered is None:
            return self._MISS
        payload = encode_reply(self._reply(remembered, settings))
        self._wire[(zone, key)] = (target, remembered, settings, payload)
        return payload

    def _reply(self, lookup: Lookup, settings: ReplySettings) -> str | None:
        return policy_reply(lookup.cached, settings.testing, settings.tlsrpt, lookup.dane)

    async def tcp_table_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
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
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def metrics(self) -> str:
        m = self.engine.metrics
        lines = [
            "# HELP mtasts_resolver_requests_total Postfix requests by outcome.",
            "# TYPE mtasts_resolver_requests_total counter",
            *(
                f'mtasts_resolver_requests_total{{outcome="{k}"}} {v}'
                for k, v in self.requests.items()
            ),
            "# HELP mtasts_resolver_lookups_total Policy lookups by where the answer came from.",
            "# TYPE mtasts_resolver_lookups_total counter",
            *(
                f'mtasts_resolver_lookups_total{{source="{k}"}} {v}'
                for k, v in sorted(m.lookups.items())
            ),
            "# HELP mtasts_resolver_fetch_failures_total Failed policy fetches by reason.",
            "# TYPE mtasts_resolver_fetch_failures_total counter",
            *(
                f'mtasts_resolver_fetch_failures_total{{reason="{k}"}} {v}'
                for k, v in sorted(m.fetch_failures.items())
            ),
            "# TYPE mtasts_resolver_fetches_total counter",
            f"mtasts_resolver_fetches_total {m.fetches}",
            "# TYPE mtasts_resolver_cached_policies gauge",
            f"mtasts_resolver_cached_policies {len(self.engine.store)}",
        ]
        return "\n".join(lines) + "\n"

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


def encode_reply(value: str | None) -> bytes:
    return netstring(f"OK {value}" if value else "NOTFOUND ")


class SocketmapProtocol(asyncio.Protocol):
    """Socketmap without a coroutine per request: cached answers are written from data_received.

    A request that needs DNS or HTTPS runs as a task; requests behind it wait in
    order, so replies always come back in the order Postfix asked.
    """

    def __init__(self, service: ResolverService) -> None:
        self.service = service
        self.buffer = bytearray()
        self.queue: collections.deque[tuple[str, str]] = collections.deque()
        self.busy = False
        self.task: asyncio.Future[None] | None = None  # held so it is not collected mid-flight
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            while (request := self._take()) is not None:
                self.queue.append(request)
        except NetstringError as exc:
            self._refuse(str(exc))
            return
        self._drain()

    def _take(self) -> tuple[str, str] | None:
        colon = self.buffer.find(b":")
        if colon < 0:
            if self.buffer and (not self.buffer.isdigit() or len(self.buffer) > 6):
                raise NetstringError("bad netstring length")
            return None
        digits = bytes(self.buffer[:colon])
        if not digits.isdigit() or len(digits) > 6 or int(digits) > _MAX_NETSTRING:
            raise NetstringError("bad netstring length")
        end = colon + 1 + int(digits)
        if len(self.buffer) <= end:
            return None
        if self.buffer[end] != ord(","):
            raise NetstringError("netstring not terminated by ','")
        data = bytes(self.buffer[colon + 1 : end])
        del self.buffer[: end + 1]
        try:
            request = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NetstringError("request is not UTF-8") from None
        if " " not in request:
            raise NetstringError("the request has no key (expected 'NAME KEY')")
        zone, _, key = request.partition(" ")
        return zone, key

    def _drain(self) -> None:
        while self.queue and not self.busy:
            zone, key = self.queue.popleft()
            payload = self.service.answer_now(key, zone)
            if payload is ResolverService._MISS:
                self.busy = True
                self.task = asyncio.ensure_future(self._slow(zone, key))
                return
            self._send(payload)  # type: ignore[arg-type]

    async def _slow(self, zone: str, key: str) -> None:
        try:
            value = await self.service.answer(key, zone)
        except Exception:  # a bug must not take the connection's queue down with it
            log.exception("lookup failed key=%s", key)
            value = None
        self.busy = False
        self._send(encode_reply(value))
        self._drain()

    def _send(self, payload: bytes) -> None:
        self.service.requests["notfound" if payload.startswith(b"9:NOTFOUND") else "ok"] += 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)

    def _refuse(self, reason: str) -> None:
        self.service.requests["error"] += 1
        log.warning("malformed socketmap request: %s", reason)
        if self.transport is not None:
            self.transport.write(netstring(f"PERM {reason}"))
            self.transport.close()


async def start_listener(service: ResolverService, listen: Listen) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    path = Path(listen.address)
    if listen.family == "unix":
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    server: asyncio.AbstractServer
    if listen.protocol == "socketmap" and listen.family == "unix":
        server = await loop.create_unix_server(lambda: SocketmapProtocol(service), str(path))
    elif listen.protocol == "socketmap":
        server = await loop.create_server(
            lambda: SocketmapProtocol(service), listen.address, listen.port
        )
    elif listen.family == "unix":
        server = await asyncio.start_unix_server(service.tcp_table_client, str(path))
    else:
        server = await asyncio.start_server(service.tcp_table_client, listen.address, listen.port)
    if listen.family == "unix":
        os.chmod(path, 0o666)  # Postfix's smtp processes run as the postfix user
    return server
