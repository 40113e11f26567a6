"""``mtasts lab``: run the simulated mail internet and explain its domains."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import click

from mtasts.lab.control import Change, ChangeError, read_stats, send_change
from mtasts.lab.dkim import LabSigners
from mtasts.lab.reports import simulate_mail
from mtasts.lab.runtime import STATE_FILE, Lab, LabConfig, read_state, run_forever
from mtasts.lab.scenario import ScenarioError, builtin_scenarios, load_scenario
from mtasts.net.loop import run
from mtasts.sts.domain import normalise_host

from .output import EXIT_USAGE, echo, print_json

_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("lab-state"),
    show_default=True,
    envvar="MTASTS_LAB_STATE",
    help="The lab's state folder (lab.json, CA, control socket).",
)


@click.group()
def lab() -> None:
    """A simulated mail internet on loopback: DNS, HTTPS policy hosts, SMTP MX hosts."""


def _scenario_or_exit(source: str):  # type: ignore[no-untyped-def]
    try:
        return load_scenario(source)
    except ScenarioError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)


@lab.command("up")
@click.option(
    "--scenario", default="default", show_default=True, help="A built-in name or a TOML file."
)
@click.option(
    "--generate",
    "generate_count",
    type=click.IntRange(0, 50000),
    default=0,
    help="Add N generated domains (deterministic).",
)
@click.option(
    "--providers",
    type=click.IntRange(0, 1000),
    default=0,
    help="Host about two thirds of the generated domains at N shared mail providers.",
)
@click.option(
    "--mx-addresses",
    type=click.IntRange(1, 10000),
    default=16,
    show_default=True,
    help="How many MX addresses the generated domains' healthy MX hosts share.",
)
@_STATE_DIR
@click.option(
    "--subnet", default="127.77", show_default=True, help="The 127.X /16 the lab's hosts live in."
)
@click.option(
    "--ports",
    type=click.Choice(["auto", "standard", "high"]),
    default="auto",
    show_default=True,
    help="auto: 53/443/25 when bindable, else 10053/10443/10025.",
)
@click.option("--dns-port", type=int)
@click.option("--https-port", type=int)
@click.option("--smtp-port", type=int)
@click.option(
    "--reports/--no-reports",
    default=True,
    show_default=True,
    help="Write three weeks of DKIM-signed TLS-RPT report mail to STATE_DIR/reports/.",
)
@click.option(
    "--warm",
    is_flag=True,
    help="Issue every certificate and load every TLS context before the lab is up (slower"
    " start); otherwise each host's first client pays for it, which a benchmark would measure.",
)
@click.option(
    "--detach", "-d", is_flag=True, help="Run in the background; stop it with mtasts lab down."
)
def lab_up(
    scenario: str,
    generate_count: int,
    providers: int,
    mx_addresses: int,
    state_dir: Path,
    subnet: str,
    ports: str,
    dns_port: int | None,
    https_port: int | None,
    smtp_port: int | None,
    reports: bool,
    warm: bool,
    detach: bool,
) -> None:
    """Run the lab until interrupted (or in the background with --detach); write STATE_DIR/lab.json."""
    if detach:
        _detach(state_dir)
        return
    if not (
        subnet.startswith("127.")
        and subnet.count(".") == 1
        and subnet[4:].isdigit()
        and 0 < int(subnet[4:]) < 255
    ):
        raise click.BadParameter("must look like 127.N with N from 1 to 254", param_hint="--subnet")
    config = LabConfig(
        _scenario_or_exit(scenario),
        state_dir.resolve(),
        generate_count,
        subnet,
        ports,
        dns_port,
        https_port,
        smtp_port,
        providers,
        mx_addresses,
        warm,
    )
    instance = Lab(config)

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(run_forever(instance, ready))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            folder = config.state_dir / "reports"
            # In a thread: signing a thousand mails must not stall the lab's servers meanwhile.
            written = (
                await asyncio.to_thread(write_reports, read_state(config.state_dir), folder)
                if reports
                else None
            )
            count = len(config.scenario.domains) + generate_count
            echo(f"lab up: {count} domains, scenario {config.scenario.name!r}", bold=True, err=True)
            echo(
                f"  DNS      {instance.nameserver()} (dig @{instance.topology.dns_address} -p {instance.ports['dns']} ...)",
                err=True,
            )
            echo(f"  CA       {instance.ca.ca_file}", err=True)
            echo(
                f"  HTTPS    port {instance.ports['https']}, SMTP port {instance.ports['smtp']}",
                err=True,
            )
            echo(f"  state    {instance.state_file}", err=True)
            if written is not None:
                echo(f"  reports  {written} report mails in {folder}", err=True)
            echo(
                f"  client flags: {instance.check_flags()}",
                err=True,
            )
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        # uvloop when installed: the lab serves DNS, HTTPS and SMTP for every client at once,
        # and in a benchmark it shares the machine with the tool measured.
        run(main())
    except OSError as exc:
        echo(
            f"error: the lab cannot listen: {exc} (try --ports high or another --subnet)",
            fg="red",
            err=True,
        )
        sys.exit(EXIT_USAGE)


def _detach(state_dir: Path) -> None:
    """Start the same ``lab up`` in its own session, wait until it is up, print where."""
    args = [a for a in sys.argv[1:] if a not in ("--detach", "-d")]
    state_dir.mkdir(parents=True, exist_ok=True)
    state = state_dir / STATE_FILE
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    log = (state_dir / "lab.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mtasts", *args],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not state.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            echo(f"error: the lab did not start; see {state_dir / 'lab.log'}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        time.sleep(0.1)
    while process.poll() is None and not (state_dir / "lab.log").read_text().count("client flags"):
        time.sleep(0.1)  # the reports and the summary are written after lab.json
    click.echo((state_dir / "lab.log").read_text(), nl=False)
    echo(
        f"lab running in the background (pid {process.pid}); stop it with: mtasts lab down --state-dir {state_dir}"
    )


@lab.command("down")
@_STATE_DIR
def lab_down(state_dir: Path) -> None:
    """Stop a lab started with --detach (or any lab whose state folder this is)."""
    try:
        pid = int(read_state(state_dir)["pid"])
    except (OSError, ValueError, KeyError):
        echo(f"no lab is running with state in {state_dir}", err=True)
        sys.exit(1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while (state_dir / STATE_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    echo(f"lab stopped (pid {pid})")


@lab.command("change")
@click.argument("domain")
@_STATE_DIR
@click.option(
    "--mode",
    type=click.Choice(["testing", "enforce", "none"]),
    help="Serve a new policy in this mode.",
)
@click.option("--max-age", type=int, help="Serve a new policy with this max_age.")
@click.option(
    "--mx", "mx_patterns", multiple=True, help="Serve a new policy with these mx patterns."
)
@click.option(
    "--keep-id",
    is_flag=True,
    help="Change the policy text but leave the record's id alone (the mistake watch catches).",
)
@click.option("--remove-record", is_flag=True, help="Remove the _mta-sts TXT record.")
@click.option("--restore-record", is_flag=True, help="Put a removed _mta-sts record back.")
@click.option(
    "--certificate",
    metavar="expired|expires-in:DAYS|renew",
    help="Replace the MX certificate(s) (of --address, else every MX address of DOMAIN).",
)
@click.option(
    "--mx-fault",
    metavar="FAULT",
    help="Give the MX address(es) a fault (no-starttls, hang, handshake-failure, ...; none heals).",
)
@click.option("--address", help="The MX address --certificate or --mx-fault applies to.")
@click.option(
    "--backend",
    type=click.Choice(["stale", "none"]),
    help="stale: the policy host gains a second address serving last year's policy.",
)
@click.option(
    "--dns",
    type=click.Choice(["timeout", "servfail", "none"]),
    help="Make DNS for --dns-name (default _mta-sts.DOMAIN) time out or fail; none heals.",
)
@click.option("--dns-name", help="The name --dns applies to.")
def lab_change(
    domain: str,
    state_dir: Path,
    mode: str | None,
    max_age: int | None,
    mx_patterns: tuple[str, ...],
    keep_id: bool,
    remove_record: bool,
    restore_record: bool,
    certificate: str | None,
    mx_fault: str | None,
    address: str | None,
    backend: str | None,
    dns: str | None,
    dns_name: str | None,
) -> None:
    """Change DOMAIN in the running lab (for watching changes happen).

    \b
    mtasts lab change secure.example --certificate expires-in:5
    mtasts lab change secure.example --mode testing --keep-id
    mtasts lab change secure.example --dns timeout
    """
    if remove_record and restore_record:
        raise click.UsageError("--remove-record and --restore-record together")
    change = Change(
        domain,
        mode=mode,
        max_age=max_age,
        mx_patterns=mx_patterns or None,
        keep_id=keep_id,
        sts_record="remove" if remove_record else "restore" if restore_record else None,
        certificate=certificate,
        mx_fault=mx_fault,
        address=address,
        backend=backend,
        dns=dns,
        dns_name=dns_name,
    )
    try:
        done = send_change(state_dir, change)
    except ChangeError as exc:
        echo(f"error: lab change {domain}: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    for line in done:
        echo(line)


@lab.command("stats")
@_STATE_DIR
@click.option("--reset", is_flag=True, help="Start the counters anew after reading them.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: address -> counters.")
def lab_stats(state_dir: Path, reset: bool, as_json: bool) -> None:
    """What the lab's MX hosts saw: connections per address and the most open at once."""
    try:
        stats = read_stats(state_dir, reset)
    except ChangeError as exc:
        echo(f"error: lab stats: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        print_json(stats)
        return
    total = sum(s["connections"] for s in stats.values())
    echo(f"{total:,} SMTP connections to {len(stats):,} MX addresses")
    for address, counters in sorted(stats.items(), key=lambda i: -i[1]["connections"])[:20]:
        echo(f"  {address:<16} {counters['connections']:>7,} connections, peak {counters['peak']}")


@lab.command("reports")
@_STATE_DIR
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the report mail (.eml), one file per report.",
)
@click.option("--days", type=click.IntRange(1, 366), default=21, show_default=True)
def lab_reports(state_dir: Path, out: Path, days: int) -> None:
    """Write the running lab's simulated TLS-RPT reports, as DKIM-signed mail, to --out."""
    try:
        state = read_state(state_dir)
    except OSError:
        echo(f"error: no lab is running with state in {state_dir}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    echo(f"{write_reports(state, out, days)} report mails in {out}")


def write_reports(state: dict[str, Any], folder: Path, days: int = 21) -> int:
    """The lab's simulated senders' reports, one signed mail each (RFC 8460 §5.3, §3)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.eml"):
        old.unlink()
    mails = simulate_mail(state["domains"], LabSigners.load(Path(state["dkim_keys"])), days)
    for n, mail in enumerate(mails):
        (folder / f"report-{n:05d}.eml").write_bytes(mail)
    return len(mails)


@lab.command("scenarios")
def lab_scenarios() -> None:
    """List the built-in scenarios."""
    for name, path in sorted(builtin_scenarios().items()):
        scenario = load_scenario(str(path))
        # The whole first paragraph, wrapped, never cut mid-sentence.
        first = " ".join(scenario.description.strip().split("\n\n")[0].split())
        lines = textwrap.wrap(first, 70) or [""]
        echo(f"{name:<12} {len(scenario.domains):>3} domains  {lines[0]}")
        for line in lines[1:]:
            echo(f"{'':<12} {'':>3}          {line}")


@lab.command("explain")
@click.argument("domain", required=False)
@click.option("--scenario", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lab_explain(domain: str | None, scenario: str, as_json: bool) -> None:
    """Tell what is wrong with a lab domain, and why; with no DOMAIN, list them all."""
    loaded = _scenario_or_exit(scenario)
    if as_json:
        picked = [d for d in loaded.domains if domain is None or d.name == normalise_host(domain)]
        if not picked:
            echo(f"error: {domain!r} is not in scenario {loaded.name!r}", fg="red", err=True)
            sys.exit(EXIT_USAGE)
        print_json(
            [
                {
                    "domain": d.name,
                    "expect": list(d.expect),
                    "explain": " ".join((d.explain or "").split()),
                    "mx": [
                        {
                            "name": mx.name,
                            "preference": mx.preference,
                            "cname": mx.cname,
                            "faults": [a.fault.value for a in mx.addresses],
                        }
                        for mx in d.mx
                    ],
                    "sts_txt": ["".join(r) for r in d.sts_txt()],
                    "tlsrpt_txt": ["".join(r) for r in d.tlsrpt_txt()],
                    "policy_host_fault": d.policy_host.value,
                }
                for d in picked
            ]
        )
        return
    if domain is None:
        width = max(len(d.name) for d in loaded.domains)
        for d in loaded.domains:
            summary = " ".join((d.explain or "").split())
            cut = summary.split(". ")[0].rstrip(".") + "." if summary else ""
            echo(f"{d.name:<{width}}  {', '.join(d.expect) or 'healthy':<28}  {cut}")
        echo(f"details: mtasts lab explain DOMAIN --scenario {loaded.name}")
        return
    match = next((d for d in loaded.domains if d.name == normalise_host(domain)), None)
    if match is None:
        names = ", ".join(d.name for d in loaded.domains)
        echo(
            f"error: {domain!r} is not in scenario {loaded.name!r}; it has: {names}",
            fg="red",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    echo(match.name, bold=True)
    echo(match.explain or "(no explanation in the scenario)")
    echo(f"expected findings: {', '.join(match.expect) or 'none (healthy)'}")
    for mx in match.mx:
        target = f" -> CNAME {mx.cname}" if mx.cname else ""
        faults = ", ".join(
            a.fault.value + (f" ({a.cert_name})" if a.cert_name else "") for a in mx.addresses
        )
        echo(f"  MX {mx.preference} {mx.name}{target}: {len(mx.addresses)} address(es): {faults}")
    for record in match.sts_txt():
        echo(f"  _mta-sts TXT: {''.join(record)}")
    for record in match.tlsrpt_txt():
        echo(f"  _smtp._tls TXT: {''.join(record)}")
    if match.policy_host.value != "none":
        echo(f"  policy host fault: {match.policy_host.value}")
