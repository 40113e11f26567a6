"""The ``mtasts`` entry point: a click group that only wires sub-commands together."""

from __future__ import annotations

import click

from mtasts import __version__

from .check import check
from .demo import demo
from .deploy import (
    history,
    init,
    max_age_command,
    mode_command,
    publish_command,
    records,
    retire_command,
)
from .lab import lab
from .lint import lint
from .reports import reports
from .resolver import resolver
from .serve import serve
from .status import status_command


@click.group(
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "auto_envvar_prefix": "MTASTS",
    }
)
@click.version_option(__version__, prog_name="mtasts")
def cli() -> None:
    """MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): publish, prove, monitor, enforce."""


cli.add_command(lint)
cli.add_command(check)
for command in (
    init,
    records,
    history,
    serve,
    mode_command,
    max_age_command,
    retire_command,
    publish_command,
    status_command,
):
    cli.add_command(command)
cli.add_command(demo)
cli.add_command(lab)
cli.add_command(resolver)
cli.add_command(reports)


def main() -> None:
    cli(prog_name="mtasts")
