"""The ASGI app: the policy at ``/.well-known/mta-sts.txt`` by Host header, health and metrics.

RFC 8461 §3.3: the policy is served over HTTPS with status 200 and media type
text/plain; senders never follow redirects and must not use HTTP caching, so
nothing here redirects and ``Cache-Control: no-store`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from mtasts.reports.provenance import Channel
from mtasts.reports.store import Outcome, ReportStore, store_error
from mtasts.sts.names import WELL_KNOWN_PATH
from mtasts.tlsrpt import DEFAULT_MAX_SIZE

from .accesslog import ASGIApp, client_address
from .limits import RateLimit, ServeLimits
from .site import PolicySite, Served

log = logging.getLogger("mtasts.web")

_HEADERS = {"Cache-Control": "no-store"}


_DEFAULT_LIMITS = ServeLimits()
RUA_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")
# A bare application/tlsrpt is taken as the gzip or JSON its bytes are (other implementations
# send it); it is not advertised.
_ACCEPTED_TYPES = (*RUA_TYPES, "application/tlsrpt")


def _posted_domain(request: Request) -> str | None:
    """The domain an HTTPS rua serves, from the host it was POSTed to (``mta-sts.<domain>``
    or any name under the domain): the hint for a report that omits policy-domain."""
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower().rstrip(".")
    if not host or host.replace(".", "").isdigit() or ":" in host:
        return None
    return host.removeprefix("mta-sts.")


def create_app(
    site: PolicySite,
    watch_interval: float = 2.0,
    store: ReportStore | None = None,
    max_report: int = DEFAULT_MAX_SIZE,
    limits: ServeLimits = _DEFAULT_LIMITS,
    operator_routes: bool = False,
) -> Starlette:
    """The public app: policies and the HTTPS rua. ``operator_routes`` adds /healthz and
    /metrics, which name the served domains: they belong on a loopback listener
    (:func:`operator_app`), not on the internet-facing port (security review #7)."""
    posts = RateLimit(limits.posts_per_minute)
    parses = asyncio.Semaphore(limits.parallel_parses)

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

    async def rua(request: Request) -> Response:
        """RFC 8460 §5.4: an HTTPS rua. 2xx only once the report is stored (or already was)."""
        if store is None:
            return PlainTextResponse("this server takes no TLS-RPT reports\n", 404, _HEADERS)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in _ACCEPTED_TYPES:
            return PlainTextResponse(
                f"media type must be {' or '.join(RUA_TYPES)}, not {media or 'none'}\n",
                415,
                _HEADERS,
            )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_report:
            return PlainTextResponse(f"report over the {max_report:,}-byte limit\n", 413, _HEADERS)
        client = client_address(request.client.host) if request.client else "unknown"
        if not posts.allow(client):
            site.fetches[("tlsrpt", 429)] += 1
            return PlainTextResponse(
                f"more than {limits.posts_per_minute} reports a minute from {client}; try later\n",
                429,
                {**_HEADERS, "Retry-After": str(posts.retry_after())},
            )
        body = bytearray()
        try:
            async with asyncio.timeout(limits.body_timeout):  # a trickling sender holds a slot
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > max_report:  # a sender that lies about, or omits, Content-Length
                        return PlainTextResponse(
                            f"report over the {max_report:,}-byte limit\n", 413, _HEADERS
                        )
        except TimeoutError:
            site.fetches[("tlsrpt", 408)] += 1
            return PlainTextResponse(
                f"the report did not arrive within {limits.body_timeout:g} s\n",
                408,
                {**_HEADERS, "Connection": "close"},
            )
        try:
            async with parses:  # parsing costs many times the body's size in memory
                stored = await run_in_threadpool(
                    store.ingest,
                    bytes(body),
                    f"https POST from {client}",
                    None,
                    max_report,
                    Channel.HTTPS,
                    _posted_domain(request),
                )
        except SQLAlchemyError as exc:
            # Not the sender's fault and nothing was kept: ask it to try again later.
            log.error("tlsrpt POST from %s not stored: %s", client, store_error(exc))
            site.fetches[("tlsrpt", 503)] += 1
            return PlainTextResponse(
                "the report store is unavailable; try again later\n",
                503,
                {**_HEADERS, "Retry-After": "300"},
            )
        site.fetches[("tlsrpt", 400 if stored.outcome is Outcome.QUARANTINED else 201)] += 1
        created = stored.outcome in (Outcome.STORED, Outcome.CONFLICT)
        log.info(
            "tlsrpt POST client=%s outcome=%s detail=%r", client, stored.outcome, stored.detail
        )
        if stored.outcome is Outcome.QUARANTINED:
            return PlainTextResponse(f"report not accepted: {stored.detail}\n", 400, _HEADERS)
        return PlainTextResponse(
            f"{stored.outcome}: {stored.detail}\n",
            201 if created else 200,
            _HEADERS,
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
        Route(WELL_KNOWN_PATH, policy, methods=["GET", "HEAD"]),
        Route("/tlsrpt", rua, methods=["POST"]),
    ]
    if operator_routes:
        routes += _operator_routes(site)
    return Starlette(
        routes=routes, exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan
    )


_READS = ("GET", "HEAD")


def policy_fast_path(site: PolicySite, app: ASGIApp) -> ASGIApp:
    """A policy GET answered from the response prepared for its host, before Starlette.

    Senders fetch one path (RFC 8461 §3.3), so that request skips routing, middleware
    and response building: two ASGI messages made of bytes kept per served host. An
    unknown host, another path or method, and every error answer go to ``app``,
    which remains the one place they are decided.
    """
    memo: dict[bytes, Served | None] = {}
    memo_of: list[object] = [None]  # the site.hosts the memo was built from

    def served_for(raw: bytes) -> Served | None:
        if memo_of[0] is not site.hosts or len(memo) >= 10_000:  # reloaded, or hostile names
            memo.clear()
            memo_of[0] = site.hosts
        if raw not in memo:
            host = raw.decode("latin-1")
            memo[raw] = site.policy_for(host.rsplit(":", 1)[0]) if "]" not in host else None
        return memo[raw]

    async def serve(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == WELL_KNOWN_PATH
            and scope["method"] in _READS
        ):
            raw = next((value for name, value in scope["headers"] if name == b"host"), b"")
            served = served_for(raw)
            if served is not None:
                site.fetches[(served.domain, 200)] += 1
                headers, body = served.response
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return serve


def _operator_routes(site: PolicySite) -> list[Route]:
    async def healthz(_request: Request) -> Response:
        return PlainTextResponse(f"ok {len(site.hosts)} domains\n", 200, _HEADERS)

    async def metrics(_request: Request) -> Response:
        return PlainTextResponse(
            site.metrics(), 200, _HEADERS, media_type="text/plain; version=0.0.4"
        )

    return [Route("/healthz", healthz), Route("/metrics", metrics)]


def operator_app(site: PolicySite, dashboard: Starlette | None = None) -> Starlette:
    """/healthz and /metrics, for the loopback listener of ``serve --metrics-listen``; with
    ``dashboard`` (``serve --dashboard``), the dashboard's pages beside them."""

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("not found\n", 404, _HEADERS)

    routes: list[BaseRoute] = list(_operator_routes(site))
    if dashboard is not None:
        routes.append(Mount("/", app=dashboard))
    return Starlette(routes=routes, exception_handlers={404: not_found})
