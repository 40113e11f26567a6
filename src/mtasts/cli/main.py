"""The ``mtasts`` entry point: a click group that only wires sub-commands together.

Sub-commands are imported when they run, not at start-up: a Postfix pipe starts
``mtasts reports ingest -`` once per report mail, and ``mtasts lint`` should not pay
for SQLAlchemy, the lab and the web app (walkthrough #55). ``mtasts --help`` lists
them from the table below, without importing any.
"""

from __future__ import annotations

import importlib
import sys

import click

from mtasts import __version__

# (section, name, module, attribute, short help): `mtasts --help` in the order of a
# domain's life, not the alphabet's (walkthrough #2).
_COMMANDS = (
    ("Try it", "demo", "demo", "demo", "Run mtasts against the built-in lab (no internet needed)."),
    ("Try it", "lab", "lab", "lab", "A simulated mail internet on loopback: DNS, HTTPS, SMTP."),
    ("Deploy", "init", "deploy", "init", "Add a domain to mtasts.toml, starting in testing."),
    ("Deploy", "records", "deploy", "records", "Print the TXT records, policy and host config."),
    ("Deploy", "serve", "serve", "serve", "Serve the policies over HTTPS (and an HTTPS rua)."),
    ("Deploy", "publish", "deploy", "publish_command", "Publish the records by RFC 2136 update."),
    ("Deploy", "status", "status", "status_command", "Where each domain stands, and what next."),
    ("Deploy", "history", "deploy", "history", "Every change of a domain's policy."),
    ("Prove", "lint", "lint", "lint", "Validate MTA-STS and TLS-RPT text offline."),
    ("Prove", "check", "check", "check", "Check domains end to end as a sending MTA would."),
    ("Monitor", "reports", "reports", "reports", "TLS-RPT reports: ingest, summary, readiness."),
    ("Monitor", "watch", "watch", "watch", "Watch domains and partners over time; alert."),
    ("Monitor", "web", "web", "web", "The dashboard in a browser."),
    ("Monitor", "scan", "scan", "scan", "Adoption scans of millions of domains over many workers."),
    ("Enforce", "mode", "deploy", "mode_command", "Switch a domain to testing or enforce."),
    ("Enforce", "max-age", "deploy", "max_age_command", "Ramp a domain's max_age, gated."),
    ("Enforce", "retire", "deploy", "retire_command", "Withdraw MTA-STS safely (RFC 8461 §8.3)."),
    ("Sending side", "resolver", "resolver", "resolver", "Enforce policies on Postfix's mail."),
    ("Sending side", "tlsrpt", "tlsrpt", "tlsrpt", "Send TLS-RPT reports for the mail you send."),
)
_BY_NAME = {name: (module, attribute) for _, name, module, attribute, _ in _COMMANDS}


class LifecycleGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for _, name, *_ in _COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = _BY_NAME.get(cmd_name)
        if found is None:
            return None
        module = importlib.import_module(f"mtasts.cli.{found[0]}")
        command: click.Command = getattr(module, found[1])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for section, name, _module, _attribute, short in _COMMANDS:
            sections.setdefault(section, []).append((name, short))
        for section, rows in sections.items():
            with formatter.section(section):
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


def main() -> None:
    from mtasts.errors import MtastsError

    try:
        cli(prog_name="mtasts")
    except MtastsError as exc:
        from mtasts.config import ConfigError

        from .output import EXIT_PROBLEMS, EXIT_USAGE, echo

        # An error raised on purpose is one line naming the input and the rule; anything
        # else keeps its traceback, because it is a bug to report.
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_PROBLEMS)
