"""``mtasts serve``: host the policies of every configured domain over HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import uvicorn
from starlette.applications import Starlette

from mtasts.deploy.config import DeployConfigError
from mtasts.net.loop import loop_factory, run
from mtasts.web.accesslog import TIME_FORMAT, AccessLog
from mtasts.web.app import create_app, operator_app, policy_fast_path
from mtasts.web.auth import loopback
from mtasts.web.dashboard import create_dashboard
from mtasts.web.limits import ServeLimits, head_timeout_protocol, http_parser
from mtasts.web.site import PolicySite

from .deploy import config_option
from .output import EXIT_USAGE, echo
from .reports import byte_size_option, open_report_store

_LOG_FORMAT = "time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


class _OperatorServer(uvicorn.Server):
    """The loopback listener for /metrics and /healthz; the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _PolicyServer(uvicorn.Server):
    """uvicorn's server, calling ``after`` once it has shut down: uvicorn then raises again
    the signal that stopped it, which ends the process before any code after serve()."""

    def __init__(self, config: uvicorn.Config, after: Callable[[], None]) -> None:
        super().__init__(config)
        self.after = after

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            self.after()


def _listen(text: str) -> tuple[str, int] | None:
    if text.lower() in ("", "none", "off"):
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{text!r}: use HOST:PORT or none", param_hint="--metrics-listen")
    return host.strip("[]"), int(port)


@click.command()
@config_option
@click.option(
    "--host",
    help="Address to listen on (default every IPv6 and IPv4 address, or 127.0.0.1 with --proxy).",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Default 443, or 8080 with --proxy.")
@click.option("--proxy", is_flag=True, help="Plain HTTP behind a TLS-terminating proxy.")
@click.option(
    "--reports",
    "--db",
    "reports_db",
    metavar="DB_URL",
    envvar="MTASTS_REPORTS_DB",
    help="Accept TLS-RPT reports at POST /tlsrpt into this store (RFC 8460 §5.4); or MTASTS_REPORTS_DB.",
)
@byte_size_option("2M", "Largest report POST /tlsrpt accepts, also after decompression.")
@click.option(
    "--metrics-listen",
    default="127.0.0.1:9462",
    show_default=True,
    help="HOST:PORT for /metrics and /healthz (they name the served domains), or none.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(1, 300),
    default=10,
    show_default=True,
    help="Seconds a client has for its request head (and an idle connection before it).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(1, 600),
    default=30,
    show_default=True,
    help="Seconds a client has to send a POST /tlsrpt body.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Concurrent connections; past it, new requests get 503.",
)
@click.option(
    "--posts-per-minute",
    type=click.IntRange(1, 1_000_000),
    default=60,
    show_default=True,
    help="POST /tlsrpt requests per client address per minute; past it, 429.",
)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Also serve the dashboard (mtasts web) on the --metrics-listen address, which must be"
    " loopback; its store is --reports.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One key=value line per request on stderr, written in batches (within 0.2 s).",
)
@click.option(
    "--allow-invalid-certificate",
    is_flag=True,
    help="Start even when a certificate does not cover mta-sts.<domain> or is expired.",
)
def serve(
    config_path: Path,
    host: str | None,
    port: int | None,
    proxy: bool,
    reports_db: str | None,
    max_report: int,
    metrics_listen: str,
    header_timeout: float,
    body_timeout: float,
    max_connections: int,
    posts_per_minute: int,
    access_log: bool,
    allow_invalid_certificate: bool,
    dashboard: bool,
) -> None:
    """Serve /.well-known/mta-sts.txt for every domain in the configuration (SIGHUP reloads)."""
    # ISO time with no space in it, so every line parses as logfmt (key=value).
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its migration chatter is not ours
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=_LOG_FORMAT, datefmt=TIME_FORMAT
    )
    operator = _listen(metrics_listen)
    if dashboard and (operator is None or not loopback(operator[0]) or not reports_db):
        raise click.UsageError(
            "--dashboard needs --reports DB and a loopback --metrics-listen (it has no login"
            " there; for a dashboard others reach, run mtasts web --passwords)"
        )
    site = PolicySite(config_path)
    try:
        site.load()
        problems = [] if proxy else site.certificate_problems()
        for problem in problems:  # every sender would fail: refuse to start, naming each
            echo(
                f"{'warning' if allow_invalid_certificate else 'error'}: {problem}",
                fg="yellow" if allow_invalid_certificate else "red",
                err=True,
            )
        if problems and not allow_invalid_certificate:
            echo(
                "error: not started (--allow-invalid-certificate starts anyway)", fg="red", err=True
            )
            sys.exit(EXIT_USAGE)
        context = None if proxy else site.tls_context()
    except (DeployConfigError, OSError, ssl.SSLError) as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    store = open_report_store(reports_db) if reports_db else None
    limits = ServeLimits(header_timeout, body_timeout, max_connections, posts_per_minute)
    factory: Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None
    if context is not None:
        factory = lambda _config, _default: context  # noqa: E731
    # Default: one dual-stack socket for every IPv6 and IPv4 address (a policy host with an
    # AAAA record must answer IPv6 senders too).
    dual = host is None and not proxy
    port = port or (8080 if proxy else 443)
    try:
        listener = _dual_stack(port) if dual else None
    except OSError as exc:
        echo(f"error: cannot listen: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    dual = listener is not None
    host = host or ("127.0.0.1" if proxy else "::" if dual else "0.0.0.0")
    # MTASTS_HTTP_PARSER=h11 rules out httptools when chasing a bug (as MTASTS_EVENT_LOOP).
    protocol = head_timeout_protocol(header_timeout, os.environ.get("MTASTS_HTTP_PARSER", "auto"))
    app = policy_fast_path(
        site, create_app(site, store=store, max_report=max_report, limits=limits)
    )
    access = AccessLog(sys.stderr) if access_log else None
    config = uvicorn.Config(
        access.around(app) if access is not None else app,
        host=host,
        port=port,
        log_level="warning",
        ssl_context_factory=factory,
        proxy_headers=proxy,
        server_header=False,
        # uvicorn decides "this is HTTPS" from ssl_certfile; the factory supplies the real context.
        ssl_certfile="sni" if factory else None,
        http=protocol,
        timeout_keep_alive=int(min(header_timeout, 5)),
        limit_concurrency=max_connections,
    )
    shown_host = "[::] (IPv6 and IPv4)" if dual else (f"[{host}]" if ":" in host else host)
    echo(
        f"serving {len(site.hosts)} policies on {'http' if proxy else 'https'}://{shown_host}:{config.port}"
        + (f"; /metrics and /healthz on http://{operator[0]}:{operator[1]}" if operator else "")
        + f" ({'uvloop' if loop_factory() else 'asyncio'}, {http_parser(protocol)})",
        err=True,
    )
    try:
        board = create_dashboard(store) if dashboard and store is not None else None
        # The access log's last fifth of a second is written once requests have stopped.
        server = _PolicyServer(config, access.flush if access is not None else lambda: None)
        run(_serve(server, site, operator, listener, board))
    except OSError as exc:
        echo(f"error: cannot listen: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        pass


def _operator_socket(operator: tuple[str, int]) -> socket.socket | None:
    """The operator listener's socket; a taken port costs the metrics, never the policy host."""
    family = socket.AF_INET6 if ":" in operator[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(operator)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        echo(
            f"warning: /metrics and /healthz not served: cannot listen on {operator[0]}:{operator[1]}:"
            f" {exc.strerror or exc}",
            fg="yellow",
            err=True,
        )
        return None
    return sock


def _dual_stack(port: int) -> socket.socket | None:
    """A listening socket on :: that takes IPv4 too (asyncio would set IPV6_V6ONLY)."""
    if not socket.has_ipv6:
        return None
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return None  # no IPv6 here: uvicorn listens on IPv4 alone
        raise
    return sock


async def _serve(
    main: uvicorn.Server,
    site: PolicySite,
    operator: tuple[str, int] | None,
    listener: socket.socket | None = None,
    dashboard: Starlette | None = None,
) -> None:
    side: _OperatorServer | None = None
    task = None
    sock = _operator_socket(operator) if operator is not None else None
    if sock is not None:
        side = _OperatorServer(
            uvicorn.Config(
                operator_app(site, dashboard),
                log_level="warning",
                server_header=False,
                lifespan="off",
            )
        )
        task = asyncio.create_task(side.serve(sockets=[sock]))
    try:
        await main.serve(sockets=[listener] if listener is not None else None)
    finally:
        if side is not None and task is not None:
            side.should_exit = True
            await task
