"""``mtasts serve``: host the policies of every configured domain over HTTPS."""

from __future__ import annotations

import logging
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import uvicorn

from mtasts.deploy.config import DeployConfigError
from mtasts.web.app import create_app
from mtasts.web.site import PolicySite

from .deploy import config_option
from .output import EXIT_USAGE, echo
from .reports import max_report_option, open_report_store


@click.command()
@config_option
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="Default 443, or 8080 with --proxy.")
@click.option("--proxy", is_flag=True, help="Plain HTTP behind a TLS-terminating proxy.")
@click.option(
    "--reports",
    "reports_db",
    metavar="DB_URL",
    help="Accept TLS-RPT reports at POST /tlsrpt into this store (RFC 8460 §5.4).",
)
@max_report_option
def serve(
    config_path: Path,
    host: str,
    port: int | None,
    proxy: bool,
    reports_db: str | None,
    max_report: int,
) -> None:
    """Serve /.well-known/mta-sts.txt for every domain in the configuration (SIGHUP reloads)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")  # fmt: skip
    site = PolicySite(config_path)
    try:
        site.load()
        context = None if proxy else site.tls_context()
    except (DeployConfigError, OSError, ssl.SSLError) as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    store = open_report_store(reports_db) if reports_db else None
    factory: Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None
    if context is not None:
        factory = lambda _config, _default: context  # noqa: E731
    config = uvicorn.Config(
        create_app(site, store=store, max_report=max_report), host=host, port=port or (8080 if proxy else 443), log_level="warning",
        ssl_context_factory=factory, proxy_headers=proxy, server_header=False,
        # uvicorn decides "this is HTTPS" from ssl_certfile; the factory supplies the real context.
        ssl_certfile="sni" if factory else None,
    )  # fmt: skip
    echo(
        f"serving {len(site.hosts)} policies on {'http' if proxy else 'https'}://{host}:{config.port}",
        err=True,
    )
    try:
        uvicorn.Server(config).run()
    except OSError as exc:
        echo(f"error: cannot listen: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
