"""``mtasts web``: the dashboard, and ``mtasts web passwd`` for its users."""

from __future__ import annotations

import getpass
import ipaddress
import sys
from pathlib import Path

import click
import uvicorn

from mtasts.web.auth import AuthConfig, AuthError, loopback, set_password
from mtasts.web.dashboard import DashboardConfig, create_dashboard

from .output import EXIT_USAGE, echo
from .reports import db_option, open_report_store

_DEFAULT_PASSWORDS = Path("/etc/mtasts/web.passwd")


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8025, show_default=True)
@db_option
@click.option(
    "--passwords",
    "password_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log in with the users of this file (mtasts web passwd writes it).",
)
@click.option(
    "--user-header",
    help="Trust this header (e.g. X-Remote-User) as the logged-in user, from --trusted-proxy only.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    help="An address or network (CIDR) of the reverse proxy that sets --user-header.",
)
@click.option(
    "--read-only",
    is_flag=True,
    help="The database role can only read: hide the actions that write (quarantine retry).",
)
@click.pass_context
def web(
    context: click.Context,
    host: str,
    port: int,
    db: str | None,
    password_file: Path | None,
    user_header: str | None,
    trusted_proxies: tuple[str, ...],
    read_only: bool,
) -> None:
    """The dashboard: reports, readiness, checks and changes in a browser.

    It listens on 127.0.0.1 by default; anywhere else it needs --passwords or
    --user-header with --trusted-proxy (behind a TLS-terminating proxy).
    """
    if context.invoked_subcommand is not None:
        return
    try:
        networks = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trusted-proxy") from None
    if user_header and not networks:
        raise click.UsageError("--user-header needs --trusted-proxy: who may set it?")
    auth = AuthConfig(password_file, user_header, networks)
    if not loopback(host) and not auth.enabled:
        echo(
            f"error: --host {host} is reachable from other machines: give --passwords FILE"
            " (mtasts web passwd) or --user-header with --trusted-proxy",
            fg="red",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    store = open_report_store(db)
    try:
        app = create_dashboard(
            store,
            DashboardConfig(auth=auth, secure_cookies=not loopback(host), read_only=read_only),
        )
    except AuthError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    echo(f"dashboard on http://{host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


@web.command("passwd")
@click.argument("user")
@click.option(
    "--file",
    "password_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=_DEFAULT_PASSWORDS,
    show_default=True,
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
def web_passwd(user: str, password_file: Path, password_stdin: bool) -> None:
    """Set USER's password in the dashboard's password file (argon2id, mode 0600)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            echo("error: the two passwords differ", fg="red", err=True)
            sys.exit(EXIT_USAGE)
    try:
        set_password(password_file, user, password)
    except AuthError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    echo(f"{user}'s password set in {password_file}")
