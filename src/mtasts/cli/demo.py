"""``mtasts demo``: show the product working with no internet and no setup."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import click
from rich.table import Table

from mtasts.check.lint import lint_policy, lint_sts_record, lint_tlsrpt_record
from mtasts.check.records import survey_all
from mtasts.lab.runtime import read_state
from mtasts.net.dns import Nameserver, Resolver

from .lint import render
from .output import console, echo


def _start_lab(state_dir: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtasts",
            "lab",
            "up",
            "--state-dir",
            str(state_dir),
            "--ports",
            "high",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    deadline = time.monotonic() + 30
    while not (state_dir / "lab.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            err = process.stderr.read().decode() if process.stderr else ""
            raise click.ClickException(f"the lab did not start: {err.strip()}")
        time.sleep(0.05)
    return process


@click.command()
def demo() -> None:
    """Run mtasts against the built-in lab (no internet needed)."""
    examples = resources.files("mtasts") / "examples"
    echo("== 1. lint what you are about to publish ==", bold=True)
    render(
        [
            lint_policy((examples / "broken-mta-sts.txt").read_bytes(), "broken-mta-sts.txt"),
            lint_sts_record("v=STSv1; id=2026-05-21;"),
            lint_tlsrpt_record("v=TLSRPTv1; rua=http://reports.example.com/tlsrpt"),
        ],
        as_json=False,
    )
    with tempfile.TemporaryDirectory(prefix="mtasts-lab-") as folder:
        state_dir = Path(folder)
        echo("\n== 2. start the lab: a simulated mail internet on 127.77.0.0/16 ==", bold=True)
        started = time.monotonic()
        process = _start_lab(state_dir)
        try:
            state = read_state(state_dir)
            echo(
                f"lab up in {time.monotonic() - started:.1f} s: {len(state['domains'])} domains,"
                f" DNS {state['nameserver']}, HTTPS port {state['https']['port']},"
                f" SMTP port {state['smtp']['port']}"
            )
            echo("\n== 3. what each lab domain publishes, read over DNS ==", bold=True)
            resolver = Resolver((Nameserver.parse(state["nameserver"]),), timeout=3)
            names = [d["name"] for d in state["domains"]]
            surveys = asyncio.run(survey_all(resolver, names))
            table = Table("domain", "_mta-sts", "_smtp._tls", "what a checker must find")
            for domain, result in zip(state["domains"], surveys, strict=True):
                table.add_row(
                    domain["name"],
                    result.sts_record or f"[red]{result.sts_problem}[/red]",
                    result.tlsrpt_record or f"[yellow]{result.tlsrpt_problem}[/yellow]",
                    ", ".join(domain["expect"]) or "[green]nothing: healthy[/green]",
                )
            console().print(table)
            echo("\nExplore it yourself: mtasts lab up; mtasts lab explain cname-mx.example")
        finally:
            process.terminate()
            process.wait(10)
