"""Bounds on what one client of ``mtasts serve`` may cost: time, connections and POSTs.

The policy host faces the internet (RFC 8461 §3.3 puts it at ``mta-sts.<domain>`` on
port 443) and an HTTPS rua takes reports from anyone (RFC 8460 §5.4). uvicorn bounds
neither how long a client may take to send its request head nor how long an idle
connection is held before its first request, so a trickling client could hold a
connection for ever (security review #6). These are the bounds, each configurable.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True, slots=True)
class ServeLimits:
    header_timeout: float = (
        10.0  # seconds from connect (or the last response) to a full request head
    )
    body_timeout: float = 30.0  # seconds for a POST /tlsrpt body, however fast it trickles
    max_connections: int = 1000  # uvicorn's limit_concurrency: past it, 503
    posts_per_minute: int = 60  # per client address, to POST /tlsrpt
    parallel_parses: int = 4  # reports parsed at once (each can cost many times its size)


class _HeadDeadline(asyncio.Protocol):
    """A deadline for each request head, armed at connect and after each response.

    Mixed in before uvicorn's h11 or httptools protocol; each subclass disarms it where
    its parser knows the head is in, and re-arms it after its response.
    """

    header_timeout: float = 10.0
    _head_deadline: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _rearm(self) -> None:
        if not self.transport.is_closing():
            self._disarm()
            self._arm()  # the next request on this connection gets its own deadline

    def _head_timed_out(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


class HeadTimeoutProtocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head."""

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state in (h11.SEND_BODY, h11.DONE):  # the head is in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._rearm()


def _httptools_protocol() -> type[asyncio.Protocol] | None:
    """The same deadline on uvicorn's httptools protocol, when httptools (``mtasts[fast]``)
    is installed: its parser is C, where h11's is Python (a third of a policy GET's time)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class HeadTimeoutHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            self._disarm()  # the head is in
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._rearm()

    return HeadTimeoutHttpToolsProtocol


def http_parser(protocol: type[asyncio.Protocol]) -> str:
    """Which HTTP parser a protocol from :func:`head_timeout_protocol` runs."""
    return "h11" if issubclass(protocol, HeadTimeoutProtocol) else "httptools"


def head_timeout_protocol(seconds: float, parser: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a ``seconds`` deadline per request head: httptools when
    installed (``parser="auto"``), else h11; ``parser="h11"`` insists on h11."""
    base = _httptools_protocol() if parser == "auto" else None
    return type("HeadTimeoutProtocol", (base or HeadTimeoutProtocol,), {"header_timeout": seconds})


class RateLimit:
    """A token bucket per client address, for at most ``capacity`` addresses (LRU)."""

    def __init__(self, per_minute: int, capacity: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(per_minute, 1))
        self.capacity = capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self) -> int:
        return max(1, int(1 / self.rate) if self.rate else 60)


__all__ = [
    "HeadTimeoutProtocol",
    "RateLimit",
    "ServeLimits",
    "head_timeout_protocol",
    "http_parser",
]
