"""The ASGI app: the policy at ``/.well-known/mta-sts.txt`` by Host header, health and metrics.

RFC 8461 §3.3: the policy is served over HTTPS with status 200 and media type
text/plain; senders never follow redirects and must not use HTTP caching, so
nothing here redirects and ``Cache-Control: no-store`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .site import PolicySite

WELL_KNOWN = "/.well-known/mta-sts.txt"
_HEADERS = {"Cache-Control": "no-store"}


def create_app(site: PolicySite, watch_interval: float = 2.0) -> Starlette:
    async def policy(request: Request) -> Response:
        host = (
            request.headers.get("host", "").rsplit(":", 1)[0]
            if "]" not in request.headers.get("host", "")
            else ""
        )
        served = site.policy_for(host)
        if served is None:
            site.fetches[("unknown", 404)] += 1
            return PlainTextResponse(
                f"no MTA-STS policy is served for {host or 'this host'}\n", 404, _HEADERS
            )
        site.fetches[(served.domain, 200)] += 1
        return PlainTextResponse(
            served.policy, 200, _HEADERS, media_type="text/plain; charset=utf-8"
        )

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse(f"ok {len(site.hosts)} domains\n", 200, _HEADERS)

    async def metrics(_request: Request) -> Response:
        return PlainTextResponse(
            site.metrics(), 200, _HEADERS, media_type="text/plain; version=0.0.4"
        )

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("not found\n", 404, _HEADERS)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        # SIGHUP (and an edited mtasts.toml) reload without dropping a connection.
        loop.add_signal_handler(signal.SIGHUP, site.reload)

        async def watch() -> None:
            while True:
                await asyncio.sleep(watch_interval)
                site.reload_if_changed()

        watcher = asyncio.create_task(watch())
        try:
            yield
        finally:
            watcher.cancel()
            loop.remove_signal_handler(signal.SIGHUP)

    routes = [
        Route(WELL_KNOWN, policy, methods=["GET", "HEAD"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]
    return Starlette(
        routes=routes, exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan
    )
