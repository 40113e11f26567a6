"""``mtasts demo``: show the product working with no internet and no setup."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import click

from mtasts.check.checker import CheckOptions, check_many
from mtasts.check.findings import Severity
from mtasts.check.lint import lint_policy, lint_sts_record, lint_tlsrpt_record
from mtasts.lab.control import Change, send_change
from mtasts.lab.dkim import LabSigners
from mtasts.lab.reports import simulate_mail
from mtasts.lab.runtime import LabClient, read_state
from mtasts.lab.scenario import builtin_scenarios
from mtasts.lab.sender import PostfixStage, unavailable
from mtasts.net.dns import Nameserver, Resolver
from mtasts.reports.analysis import readiness
from mtasts.reports.ingest import Batch, IngestResult
from mtasts.reports.provenance import Channel, DkimVerifier
from mtasts.reports.store import Outcome, open_store
from mtasts.reports.verdict import Verdict
from mtasts.resolver.engine import EngineOptions, PolicyEngine
from mtasts.resolver.postfix import TestingAnswer, policy_reply
from mtasts.resolver.store import PolicyStore
from mtasts.watch.config import Partner, WatchConfig
from mtasts.watch.observe import run_pass
from mtasts.watch.store import WatchStore

from .check import render_adoption, render_detail
from .lint import render
from .output import echo

_SUBNETS = ("127.77", "127.177", "127.187", "127.197")


def _launch(state_dir: Path, subnet: str) -> subprocess.Popen[bytes] | str:
    """A running lab process, or why it did not start."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtasts",
            "lab",
            "up",
            "--no-reports",
            "--state-dir",
            str(state_dir),
            "--ports",
            "high",
            "--subnet",
            subnet,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    deadline = time.monotonic() + 30
    while not (state_dir / "lab.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            return process.stderr.read().decode().strip() if process.stderr else "no output"
        time.sleep(0.05)
    return process


def _start_lab(state_dir: Path) -> subprocess.Popen[bytes]:
    # Another lab (or a test) may hold the first subnet's ports: try the next one.
    reasons = []
    for subnet in _SUBNETS:
        outcome = _launch(state_dir, subnet)
        if not isinstance(outcome, str):
            return outcome
        reasons.append(f"{subnet}: {outcome}")
    raise click.ClickException("the lab did not start: " + "; ".join(reasons))


def _reports_act(state: dict[str, Any], folder: Path) -> None:
    store = open_store(f"sqlite:///{folder / 'reports.sqlite'}")
    # Report mail as Google and Microsoft send it: DKIM-signed, the keys in the lab's DNS.
    mails = simulate_mail(state["domains"], LabSigners.load(Path(state["dkim_keys"])))
    verifier = DkimVerifier((Nameserver.parse(state["nameserver"]),))
    started = time.monotonic()
    result = IngestResult()
    with Batch(store, result, verifier=verifier) as batch:
        for n, mail in enumerate(mails):
            batch.add(mail, f"lab mail {n}", channel=Channel.MAILDIR)
    echo(
        f"ingested {result.counts[Outcome.STORED]} DKIM-signed report mails in"
        f" {time.monotonic() - started:.1f} s"
    )
    for domain in ("good-testing.example", "load-balancer.example"):
        verdict = readiness(store, domain, 14)
        colour = "green" if verdict.verdict is Verdict.READY else "red"
        echo(f"  {domain:<24} {verdict.verdict}: {verdict.reason}", fg=colour)
        for group in verdict.would_defer[:2]:
            echo(
                f"    {group.submitter}: {group.result_type} at {group.receiving_ip}, {group.sessions:,} sessions; see {group.explained_by}"
            )


def _watch_act(state: dict[str, Any], folder: Path, options: CheckOptions) -> None:
    """Two passes of `mtasts watch` with the lab changed in between."""
    store = WatchStore(open_store(f"sqlite:///{folder / 'reports.sqlite'}").engine)
    config = WatchConfig(
        own=("good-enforce.example",),
        partners=(Partner("good-testing.example", "", "demo"),),
    )
    first = run_pass(store, config, options, everything=True)
    echo(
        f"first pass: {len(first.checked)} domains observed, {len(first.events)} events (a baseline)"
    )
    state_dir = Path(state["ca_file"]).parent
    for line in (
        *send_change(state_dir, Change("good-enforce.example", certificate="expires-in:5")),
        *send_change(state_dir, Change("good-enforce.example", max_age=86400, keep_id=True)),
    ):
        echo(f"  lab change: {line}")
    second = run_pass(store, config, options, everything=True)
    echo(f"second pass: {len(second.events)} events")
    for event in second.events:
        colour = {"error": "red", "warning": "yellow"}.get(str(event.severity))
        echo(f"  {event.severity:<7} {event.code} {event.subject}: {event.message}", fg=colour)


_STORY = (
    "pf-good.example",
    "pf-badcert.example",
    "pf-stripped.example",
    "pf-nopolicy.example",
    "pf-testing.example",
)


def _sending_side(state: dict[str, Any]) -> None:
    """A real Postfix using mtasts resolver where this machine allows, else the resolver's answers."""
    reason = unavailable()
    if reason is None:
        with PostfixStage(builtin_scenarios()["postfix"]) as stage:
            echo(
                "a private Postfix 3 in a network namespace, smtp_tls_policy_maps = mtasts resolver:"
            )
            for domain in _STORY:
                stage.send(f"bob@{domain}")
            for domain in _STORY:
                line = stage.outcome(f"bob@{domain}")
                status = line.split("status=", 1)[1]
                echo(
                    f"  {domain:<22} {status}",
                    fg="green" if status.startswith("sent") else "yellow",
                )
            echo(
                "pf-nopolicy.example was delivered through the attacker in plaintext: it publishes no policy."
            )
            echo("\n== 8. the sending side reports back (RFC 8460): mtasts tlsrpt ==", bold=True)
            _report_back(stage)
        return
    echo(f"(a real Postfix {reason}; here is what mtasts resolver tells Postfix instead)")
    lab = LabClient.from_state(state)
    options = EngineOptions(https_port=lab.https_port, ca_file=lab.ca_file, timeout=5)
    resolver = Resolver((lab.nameserver,), timeout=5)
    engine = PolicyEngine(resolver, PolicyStore(None), options)
    for domain in (
        "good-enforce.example",
        "cname-mx.example",
        "stripped.example",
        "good-testing.example",
        "no-sts.example",
    ):
        lookup = asyncio.run(engine.lookup(domain))
        reply = policy_reply(lookup.cached, TestingAnswer.NONE, dane=lookup.dane)
        echo(f"  {domain:<22} {'OK ' + reply if reply else 'NOTFOUND':<72} {lookup.reason}")


def _report_back(stage: PostfixStage) -> None:
    """Postfix's log -> `tlsrpt collect` -> `tlsrpt send` (DKIM-signed, through that Postfix)
    -> each domain's rua mailbox -> `reports ingest` -> `reports readiness`."""
    root = stage.root
    common = stage.reporter(f"sqlite:///{root}/r.db")
    collected = stage.collect(*common)
    echo(f"  $ mtasts tlsrpt collect --log maillog --once\n  {collected.stdout.strip()}")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    sent = stage.mtasts_inside("tlsrpt", "send", "--day", today, "--partial-day", *common)
    echo(f"  $ mtasts tlsrpt send --day {today} --partial-day\n  {sent.stdout.strip()}")
    echo("  each domain's rua mailbox, ingested and judged on its receiving side:")
    for domain in _STORY:
        received = f"sqlite:///{root}/{domain}.db"
        stage.ingest_mailbox(domain, received, timeout=30)
        answer = stage.mtasts_inside("reports", "readiness", domain, "--db", received, "--json")
        try:
            found = json.loads(answer.stdout)
        except ValueError:
            echo(f"  {domain:<22} no report stored ({answer.stderr.strip()[:80]})", fg="red")
            continue
        types = sorted({g["result_type"] for g in found["would_defer"]})
        signed = "DKIM ok" if "sender.example" in found["vouched"] else "unsigned"
        echo(
            f"  {domain:<22} {found['verdict']:<10} {found['failed']}/{found['sessions']} failed"
            f" {', '.join(types) or ''} ({signed})",
            fg="yellow" if found["verdict"] == "NOT READY" else "green",
        )


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
        echo("\n== 2. start the lab: a simulated mail internet on loopback ==", bold=True)
        started = time.monotonic()
        process = _start_lab(state_dir)
        try:
            state = read_state(state_dir)
            echo(
                f"lab up in {time.monotonic() - started:.1f} s: {len(state['domains'])} domains,"
                f" hosts in {state['dns']['address'].rsplit('.', 2)[0]}.0.0/16,"
                f" DNS {state['nameserver']}, HTTPS port {state['https']['port']},"
                f" SMTP port {state['smtp']['port']}"
            )
            echo("\n== 3. check every lab domain end to end, as a sending MTA would ==", bold=True)
            lab = LabClient.from_state(state)
            options = CheckOptions(
                (lab.nameserver,), lab.ca_file, lab.smtp_port, lab.https_port, timeout=5
            )
            started = time.monotonic()
            checks = asyncio.run(check_many([d["name"] for d in state["domains"]], options))
            elapsed = time.monotonic() - started
            render_adoption(checks)
            expected = {d["name"]: sorted(d["expect"]) for d in state["domains"]}
            agree = sum(
                c.codes(Severity.ERROR, Severity.WARNING) == expected[c.domain] for c in checks
            )
            echo(
                f"checked {len(checks)} domains in {elapsed:.1f} s; {agree} of {len(checks)} match the lab's expected findings"
            )
            echo("\n== 4. one report in detail: the article's CNAME'd MX ==", bold=True)
            render_detail(next(c for c in checks if c.domain == "cname-mx.example"))
            echo(
                "\n== 5. three weeks of TLS-RPT reports from the lab's simulated senders ==",
                bold=True,
            )
            _reports_act(state, state_dir)
            echo("\n== 6. watch: what changed since the last look ==", bold=True)
            _watch_act(state, state_dir, options)
            echo("\n== 7. the sending side: enforcing other domains' policies ==", bold=True)
            _sending_side(state)
            echo("\nExplore it yourself: mtasts lab up, then mtasts check --lab lab-state DOMAIN")
        finally:
            process.terminate()
            process.wait(10)
