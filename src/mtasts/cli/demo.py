"""``mtasts demo``: show the product working with no internet and no setup."""

from __future__ import annotations

from importlib import resources

import click

from mtasts.check.lint import lint_policy, lint_report, lint_sts_record, lint_tlsrpt_record

from .lint import render
from .output import echo


@click.command()
def demo() -> None:
    """Run mtasts against bundled examples (no internet needed)."""
    examples = resources.files("mtasts") / "examples"
    echo("== lint: the example policy and records ==", bold=True)
    render(
        [
            lint_policy((examples / "mta-sts.txt").read_bytes(), "examples/mta-sts.txt"),
            lint_sts_record("v=STSv1; id=20260521T101500;"),
            lint_tlsrpt_record("v=TLSRPTv1; rua=mailto:tlsrpt@example.com"),
        ],
        as_json=False,
    )
    echo("\n== lint: mistakes a first deployment makes ==", bold=True)
    render(
        [
            lint_policy(
                (examples / "broken-mta-sts.txt").read_bytes(), "examples/broken-mta-sts.txt"
            ),
            lint_sts_record("v=STSv1; id=2026-05-21;"),
            lint_tlsrpt_record("v=TLSRPTv1; rua=http://reports.example.com/tlsrpt"),
        ],
        as_json=False,
    )
    echo("\n== lint: a TLS-RPT report as a large sender mails it ==", bold=True)
    render(
        [lint_report((examples / "report.json").read_bytes(), "examples/report.json")],
        as_json=False,
    )
