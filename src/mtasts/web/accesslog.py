"""The serve access log: one logfmt line per request, written in batches.

Through :mod:`logging` a line cost more than the policy GET it described (a LogRecord,
a strftime and a write per request: 12 of 13 us in-process, half the throughput of
``mtasts serve``). Here a line is one f-string with a timestamp made once a second,
and lines are written together at most a fifth of a second later, or at once when
many wait. Lines read exactly as the other log lines of ``mtasts serve`` do
(``time=... level=INFO logger=mtasts.web.access request ...``).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # ISO time with no space, so every line parses as logfmt
_PREFIX = "level=INFO logger=mtasts.web.access request"
_DELAY = 0.2  # seconds a line may wait for others
_MAX_WAITING = 256  # lines; past it they are written at once


@functools.lru_cache(maxsize=4096)  # per request in the access log; clients come back
def client_address(host: str) -> str:
    """An IPv4 client of the dual-stack listener as its IPv4 address, not ::ffff:a.b.c.d."""
    try:
        mapped = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        return str(mapped.ipv4_mapped)
    return host


class AccessLog:
    """Request lines for ``stream``, held for at most ``_DELAY`` seconds."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._waiting: list[str] = []
        self._second = -1
        self._stamp = ""
        self._timer: asyncio.TimerHandle | None = None

    def add(self, client: str, host: str, method: str, path: str, status: int, took: float) -> None:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime(TIME_FORMAT, time.localtime(now))
        # repr() quotes what the client chose (host, path): a line break or a quote in
        # them cannot forge a second line or field.
        self._waiting.append(
            f"time={self._stamp} {_PREFIX} client={client} host={host!r} method={method}"
            f" path={path!r} status={status} seconds={took:.3f}\n"
        )
        if len(self._waiting) >= _MAX_WAITING:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting:
            lines, self._waiting = "".join(self._waiting), []
            self.stream.write(lines)
            self.stream.flush()

    def around(self, app: ASGIApp) -> ASGIApp:
        """``app`` with a line written for each HTTP request it answers."""

        async def logged(
            scope: dict[str, Any],
            receive: Callable[[], Awaitable[Any]],
            send: Callable[[Any], Awaitable[None]],
        ) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            status = 0
            started = time.perf_counter()

            async def watched(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, watched)
            finally:
                host = next((v for k, v in scope.get("headers") or () if k == b"host"), b"")
                self.add(
                    client_address((scope.get("client") or ("-", 0))[0]),
                    host.decode("latin-1"),
                    str(scope.get("method")),
                    str(scope.get("path")),
                    status,
                    time.perf_counter() - started,
                )

        return logged


__all__ = ["AccessLog", "client_address"]
