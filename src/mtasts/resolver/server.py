"""The daemon's listeners: Postfix socketmap (netstrings) and tcp_table, on TCP or Unix sockets.

A malformed request gets a protocol error reply and its connection is closed;
nothing a client sends can stop the daemon or disturb other connections. A
lookup that outlives the request timeout answers NOTFOUND (RFC 8461 §5: no
policy known means deliver as before) while the fetch goes on for the next mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from .engine import PolicyEngine
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
        self.started = time.time()
        self.requests: dict[str, int] = {"ok": 0, "notfound": 0, "error": 0, "timeout": 0}

    async def answer(self, key: str) -> str | None:
        domain = policy_domain(key, self.settings.relays)
        if domain is None:
            return None
        try:
            lookup = await asyncio.wait_for(
                asyncio.shield(self.engine.lookup(domain)), self.settings.request_timeout
            )
        except TimeoutError:
            self.requests["timeout"] += 1
            log.warning(
                "lookup timed out domain=%s; answering NOTFOUND while the fetch goes on", domain
            )
            return None
        return policy_reply(lookup.cached, self.settings.testing, self.settings.tlsrpt)

    async def socketmap_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    request = await _read_netstring(reader)
                except asyncio.IncompleteReadError:
                    return
                _map_name, _, key = request.partition(" ")
                if not key:
                    raise NetstringError("the request has no key (expected 'NAME KEY')")
                value = await self.answer(key)
                self.requests["ok" if value else "notfound"] += 1
                writer.write(netstring(f"OK {value}" if value else "NOTFOUND "))
                await writer.drain()
        except NetstringError as exc:
            self.requests["error"] += 1
            log.warning("malformed socketmap request: %s", exc)
            with contextlib.suppress(Exception):
                writer.write(netstring(f"PERM {exc}"))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

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


async def _read_netstring(reader: asyncio.StreamReader) -> str:
    length = b""
    while True:
        char = await reader.readexactly(1)
        if char == b":":
            break
        if not char.isdigit() or len(length) >= 6:
            raise NetstringError("bad netstring length")
        length += char
    if not length or int(length) > _MAX_NETSTRING:
        raise NetstringError("bad netstring length")
    data = await reader.readexactly(int(length))
    if await reader.readexactly(1) != b",":
        raise NetstringError("netstring not terminated by ','")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NetstringError("request is not UTF-8") from None


async def start_listener(service: ResolverService, listen: Listen) -> asyncio.AbstractServer:
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    handler = (
        service.socketmap_client if listen.protocol == "socketmap" else service.tcp_table_client
    )
    if listen.family == "unix":
        path = Path(listen.address)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = await asyncio.start_unix_server(handler, str(path))
        os.chmod(path, 0o666)  # Postfix's smtp processes run as the postfix user
        return server
    return await asyncio.start_server(handler, listen.address, listen.port)
