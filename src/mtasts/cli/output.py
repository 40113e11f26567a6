"""Terminal conventions shared by every command: colour only on a TTY and never with NO_COLOR."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from mtasts.text import csv_cell, plain

if TYPE_CHECKING:  # rich costs ~30 ms to import: only commands that print tables pay it
    from rich.console import Console
    from rich.table import Table

__all__ = ["csv_cell", "plain"]  # re-exported: the CLI's modules take them from here

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def use_color() -> bool:
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Pipes and logs get whole lines, not 80 columns, unless COLUMNS says otherwise.
    columns = os.environ.get("COLUMNS", "")
    width = None if stream.isatty() else int(columns) if columns.isdigit() else 160
    return Console(stderr=stderr, no_color=not use_color(), highlight=False, width=width)


def print_table(out: Console, table: Table) -> None:
    """A table as a table when it fits, else as a list of ``column: value`` lines, so that
    nothing is cut to "certifi…" on a narrow terminal (walkthrough #34); lines end without
    the padding spaces a table adds (#33); piped, every table is plain columns (#64)."""
    if not out.is_terminal:
        table.box, table.pad_edge = None, False  # pipes and files: plain columns (#64)
    needed = out.measure(table, options=out.options.update(width=100_000)).maximum
    if needed > out.width and len(table.columns) > 2:
        if table.title:
            out.print(str(table.title), style="bold")
        headers = [str(c.header) for c in table.columns]
        cells = [list(c.cells) for c in table.columns]
        for row in range(table.row_count):
            first = True
            for header, column in zip(headers, cells, strict=True):
                value = column[row] if row < len(column) else ""
                if value in ("", None):
                    continue
                out.print(f"{'-' if first else ' '} {header}: {value}", soft_wrap=True)
                first = False
        return
    with out.capture() as captured:
        out.print(table)
    text = captured.get()
    out.file.write("\n".join(line.rstrip() for line in text.splitlines()) + "\n")


def shown(value: object) -> str:
    """Text from a stranger, safe inside Rich markup: no control characters, markup escaped."""
    from rich.markup import escape

    return escape(plain(value))


def echo(text: str, *, fg: str | None = None, bold: bool = False, err: bool = False) -> None:
    click.secho(plain(text), fg=fg, bold=bold, err=err, color=use_color() if not err else None)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Several click options as one decorator, applied in the order written."""

    def apply(func: Any) -> Any:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


LOG_FORMAT = "time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def setup_logging() -> None:
    """key=value lines on stderr for the daemons; the time is one token (RFC 3339, no space),
    so logfmt parsers read it (walkthrough #57)."""
    import logging

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S%z"
    )
