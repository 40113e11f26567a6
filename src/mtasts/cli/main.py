"""The ``mtasts`` entry point: a click group that only wires sub-commands together."""

from __future__ import annotations

import sys

import click

from mtasts import __version__
from mtasts.config import ConfigError
from mtasts.errors import MtastsError

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
from .output import EXIT_PROBLEMS, EXIT_USAGE, echo
from .reports import reports
from .resolver import resolver
from .serve import serve
from .status import status_command
from .tlsrpt import tlsrpt
from .watch import watch
from .web import web

# `mtasts --help` in the order of a domain's life, not the alphabet's (walkthrough #2).
_SECTIONS = (
    ("Try it", ("demo", "lab")),
    ("Deploy", ("init", "records", "serve", "publish", "status", "history")),
    ("Prove", ("lint", "check")),
    ("Monitor", ("reports", "watch", "web")),
    ("Enforce", ("mode", "max-age", "retire")),
    ("Sending side", ("resolver", "tlsrpt")),
)


class LifecycleGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        ordered = [name for _, names in _SECTIONS for name in names if name in self.commands]
        return ordered + sorted(set(self.commands) - set(ordered))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(n) for n in self.commands)
        listed: set[str] = set()
        for title, names in (*_SECTIONS, ("Other", tuple(sorted(self.commands)))):
            rows = [
                (name, self.commands[name].get_short_help_str(limit))
                for name in names
                if name in self.commands and name not in listed and not self.commands[name].hidden
            ]
            listed.update(name for name, _ in rows)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


@click.group(
    cls=LifecycleGroup,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "auto_envvar_prefix": "MTASTS",
    },
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
cli.add_command(tlsrpt)
cli.add_command(watch)
cli.add_command(web)


def main() -> None:
    try:
        cli(prog_name="mtasts")
    except MtastsError as exc:
        # An error raised on purpose is one line naming the input and the rule; anything
        # else keeps its traceback, because it is a bug to report.
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_PROBLEMS)
