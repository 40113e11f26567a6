"""``mtasts check``: prove a deployment end to end and explain every failure."""

from __future__ import annotations

import csv
import difflib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mtasts.check.checker import (
    AddressResult,
    CheckInterrupted,
    CheckOptions,
    DomainCheck,
    gather_domains,
    judge_all,
)
from mtasts.check.facts import DomainFacts, read_documents
from mtasts.check.findings import EXPLANATIONS, CheckCode, CheckVerdict, Severity
from mtasts.check.judge import Expected
from mtasts.check.report import ADOPTION_FIELDS, adoption_row, adoption_totals, to_json
from mtasts.deploy.config import DeployConfigError, load_config
from mtasts.deploy.state import DeployState, state_path
from mtasts.net.dns import Nameserver
from mtasts.scan.plan import PlanError, in_shard, parse_shard
from mtasts.sts.domain import as_asked, domain_problem

from .output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    console,
    csv_cell,
    echo,
    options,
    print_table,
)
from .output import shown as escape  # MX names, certificates and messages quote strangers

_STYLE = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_VERDICT = {
    CheckVerdict.OK: "[green]OK[/green]",
    CheckVerdict.WARNING: "[yellow]WARNING[/yellow]",
    CheckVerdict.ERROR: "[red]ERROR[/red]",
    CheckVerdict.UNKNOWN: "[yellow]UNKNOWN[/yellow]",
}


def read_domain_file(path: Path) -> list[tuple[str, str]]:
    """(name, where) for each line: '#' starts a comment; blank lines are skipped."""
    return [
        (line.split("#", 1)[0], f"{path}:{number}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.split("#", 1)[0].strip()
    ]


def domain_names(given: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The names to check (A-labels, lower case, each once) and one line per name that is not one."""
    names: dict[str, None] = {}
    problems = []
    for text, where in given:
        name = as_asked(text)
        problem = domain_problem(name)
        if problem:
            place = f"{where}: " if where else ""
            problems.append(f"error: {place}{text.strip()!r} is not a domain name: it {problem}")
        else:
            names.setdefault(name, None)
    return list(names), problems


def _options_from_lab(state_dir: Path) -> dict[str, Any]:
    # Imported here: the lab brings its DKIM signer and dnspython (~0.2 s) that a check of
    # real domains never uses.
    from mtasts.lab.runtime import LabClient, read_state

    try:
        lab = LabClient.from_state(read_state(state_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise click.BadParameter(
            f"cannot read {state_dir}/lab.json ({exc}); is `mtasts lab up` running?",
            param_hint="--lab",
        ) from None
    return {
        "nameservers": (lab.nameserver,),
        "ca_file": lab.ca_file,
        "smtp_port": lab.smtp_port,
        "https_port": lab.https_port,
    }


def render_detail(check: DomainCheck) -> None:
    out = console()
    errors = sum(f.severity is Severity.ERROR for f in check.findings)
    warnings = sum(f.severity is Severity.WARNING for f in check.findings)
    out.print(
        f"[bold]{escape(check.domain)}[/bold]: {_VERDICT[check.verdict]}  MTA-STS {check.mode}, "
        f"TLS-RPT {'yes' if check.tlsrpt_record else 'no'}, {errors} error(s), {warnings} warning(s)"
    )
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    for finding in sorted(check.findings, key=lambda f: order[f.severity]):
        if finding.code is CheckCode.OUTBOUND_PORT_25_BLOCKED:
            continue  # said once for the whole run, above the domains
        style = _STYLE[finding.severity]
        out.print(
            f"  [{style}]{finding.severity:<7}[/{style}] [bold]{finding.code}[/bold] {escape(finding.subject)}: {escape(finding.message)}",
            soft_wrap=True,
        )
        if finding.severity is not Severity.INFO:
            out.print(f"          [dim]why:[/dim] {escape(finding.explanation)}", soft_wrap=True)
            if finding.fix:
                out.print(f"          [dim]fix:[/dim] {escape(finding.fix)}", soft_wrap=True)
    if check.mx:
        table = Table(
            "MX",
            "address",
            "STARTTLS",
            "TLS",
            "certificate",
            "days",
            "in policy",
            "result",
            "a sender would",
            box=None,
            pad_edge=False,
        )
        for mx in check.mx:
            for i, address in enumerate(mx.addresses or [None]):
                probe = address.last if address else None
                leaf = probe.leaf if probe else None
                table.add_row(
                    f"{mx.preference} {escape(mx.host)}" if i == 0 else "",
                    escape(address.address) if address else "-",
                    {True: "yes", False: "[red]no[/red]", None: "-"}[probe.starttls]
                    if probe
                    else "-",
                    escape(probe.tls_version or "-") if probe else "-",
                    escape(", ".join(leaf.dns_ids)) if leaf else "-",
                    str(leaf.days_left()) if leaf else "-",
                    {True: "yes", False: "[red]no[/red]", None: "-"}[mx.in_policy]
                    if i == 0
                    else "",
                    _result_cell(address),
                    escape(mx.action) if i == 0 else "",
                )
        print_table(out, table)


def _result_cell(address: AddressResult | None) -> str:
    if address is None:
        return "-"
    if address.result:
        return f"[red]{address.result}[/red]"
    return "[green]ok[/green]" if address.last.connected else "unknown"


def render_adoption(checks: list[DomainCheck]) -> None:
    table = Table(
        "domain",
        "MTA-STS",
        "TLS-RPT",
        "errors",
        "warnings",
        "verdict",
        "main finding",
        title="MTA-STS adoption",
    )
    for check in checks:
        row = adoption_row(check)
        table.add_row(
            escape(row["domain"]),
            row["mta_sts"],
            "yes" if row["tlsrpt"] else "no",
            str(row["errors"]),
            str(row["warnings"]),
            _VERDICT[check.verdict],
            row["main_finding"] or "",
        )
    print_table(console(), table)
    totals = adoption_totals(checks)
    console().print(
        f"{totals['domains']} domains: {totals['enforce']} enforce, {totals['testing']} testing,"
        f" {totals['none']} without MTA-STS, {totals['broken']} broken; {totals['errors']} with"
        f" errors; {totals['tlsrpt']} publish TLS-RPT"
    )


def write_csv(path: Path, checks: list[DomainCheck]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ADOPTION_FIELDS)
        writer.writeheader()
        for check in checks:
            writer.writerow({k: csv_cell(v) for k, v in adoption_row(check).items()})


def _configured(config_path: Path) -> dict[str, Expected]:
    """The domains of ``mtasts.toml``: each one's policy and the id it was given, if any."""
    if not config_path.exists():
        return {}
    try:
        config = load_config(config_path)
    except DeployConfigError as exc:
        echo(f"error: {exc}", fg="red", err=True)
        sys.exit(EXIT_USAGE)
    state = DeployState(state_path(config_path))
    return {d.name: Expected(d.policy, state.recorded_id(d.name, d.policy)) for d in config.domains}


def _run(
    domains: list[str], options: CheckOptions, concurrency: int, workers: int
) -> list[DomainFacts]:
    if not sys.stderr.isatty() and len(domains) >= _PROGRESS_FROM:
        return gather_domains(domains, options, concurrency, workers, _progress_lines(len(domains)))
    if not sys.stderr.isatty() or len(domains) < 2:
        return gather_domains(domains, options, concurrency, workers)
    columns = (TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as progress:
        task = progress.add_task("check", total=len(domains))
        return gather_domains(
            domains, options, concurrency, workers, lambda n: progress.advance(task, n)
        )


def read_facts(source: str) -> tuple[list[DomainFacts], list[str]]:
    """The facts documents in ``source`` (a file, or ``-`` for stdin), and a line per bad one."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(
            f"cannot read {source}: {exc}", param_hint="--from-facts"
        ) from None
    facts, problems = read_documents(text, source)
    return facts, [f"error: {problem}" for problem in problems]


_PROGRESS_FROM = 100  # domains: below this a run takes a second or two
_PROGRESS_EVERY = 3.0  # seconds between two progress lines when stderr is not a terminal


def _progress_lines(total: int) -> Callable[[int], None]:
    """A line on stderr every few seconds, for a run whose output is piped or logged."""
    state = {"done": 0, "said": time.monotonic()}

    def advance(count: int) -> None:
        state["done"] += count
        now = time.monotonic()
        if now - state["said"] >= _PROGRESS_EVERY or state["done"] == total:
            state["said"] = now
            echo(f"checked {int(state['done']):,} of {total:,} domains", err=True)

    return advance


def network_settings(
    nameservers: tuple[str, ...],
    ca_file: Path | None,
    smtp_port: int,
    https_port: int,
    lab_dir: Path | None,
) -> dict[str, Any]:
    """CheckOptions' network fields from the flags and, with --lab, the running lab's values
    (the base: a flag the user typed, or set by env, still wins). Shared with `scan submit`."""
    try:
        flags: dict[str, Any] = {
            "ca_file": ca_file,
            "smtp_port": smtp_port,
            "https_port": https_port,
            "nameservers": tuple(Nameserver.parse(n) for n in nameservers),
        }
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--nameserver") from None
    settings = _options_from_lab(lab_dir) if lab_dir is not None else {}
    context = click.get_current_context()
    for key, value in flags.items():
        source = context.get_parameter_source(key)
        if key not in settings or source in (
            ParameterSource.COMMANDLINE,
            ParameterSource.ENVIRONMENT,
        ):
            settings[key] = value
    return settings


def _shard(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        return parse_shard(value)
    except PlanError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_live(
    domains: tuple[str, ...],
    domain_file: Path | None,
    config_path: Path,
    nameservers: tuple[str, ...],
    ca_file: Path | None,
    smtp_port: int,
    https_port: int,
    timeout: float,
    probes: int,
    max_mx: int,
    max_addresses: int,
    lab_dir: Path | None,
    concurrency: int,
    workers_option: int,
    shard: tuple[int, int] | None = None,
) -> tuple[list[DomainCheck], list[str], bool]:
    """Gather and judge the domains asked for (or configured): checks, bad names, interrupted."""
    given = [(d, "") for d in domains if d.strip()]
    if domain_file:
        given += read_domain_file(domain_file)
    configured = _configured(config_path) if not given else {}
    given += [(name, "") for name in configured]
    if not given:
        raise click.UsageError(
            f"give at least one DOMAIN or --file (or configure domains in {config_path})"
        )
    names, problems = domain_names(given)
    for problem in problems:  # the rest of the batch goes on
        echo(problem, fg="red", err=True)
    if not names:
        sys.exit(EXIT_USAGE)
    if shard is not None:
        k, n = shard
        names = [name for name in names if in_shard(name, k, n)]
        echo(f"shard {k}/{n}: {len(names):,} domains of this list", err=True)
    settings = network_settings(nameservers, ca_file, smtp_port, https_port, lab_dir)
    options = CheckOptions(
        timeout=timeout, probes=probes, max_mx=max_mx, max_addresses=max_addresses, **settings
    )
    workers = max(1, min(os.cpu_count() or 1, 4)) if workers_option == 0 else workers_option
    interrupted = False
    try:
        gathered = _run(names, options, concurrency, workers)
    except CheckInterrupted as stop:  # Ctrl-C: say so, and keep what was checked
        gathered, interrupted = stop.partial, True
        echo(
            f"interrupted: {len(gathered):,} of {len(names):,} domains checked; their results follow",
            fg="yellow",
            err=True,
        )
    return judge_all(gathered, configured), problems, interrupted


NETWORK_OPTIONS = options(
    click.option(
        "--nameserver",
        "nameservers",
        multiple=True,
        help="HOST[:PORT] instead of the system resolver (repeatable).",
    ),
    click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Extra trusted CAs (PEM), beside the system store; SSL_CERT_FILE is honoured.",
    ),
    click.option("--smtp-port", type=click.IntRange(1, 65535), default=25, show_default=True),
    click.option("--https-port", type=click.IntRange(1, 65535), default=443, show_default=True),
    click.option(
        "--timeout",
        type=click.FloatRange(0.1, 300),
        default=10.0,
        show_default=True,
        help="Seconds per network step.",
    ),
    click.option(
        "--probes",
        type=click.IntRange(1, 20),
        default=1,
        show_default=True,
        help="Probe each address N times (catch a load balancer's bad backend).",
    ),
    click.option(
        "--max-mx",
        type=click.IntRange(1, 1000),
        default=16,
        show_default=True,
        help="Check at most N MX hosts per domain (the most preferred); the rest is reported.",
    ),
    click.option(
        "--max-addresses",
        type=click.IntRange(1, 1000),
        default=8,
        show_default=True,
        help="Probe at most N addresses per MX host; the rest is reported.",
    ),
    click.option(
        "--lab",
        "lab_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Take nameserver, CA and ports from a running lab's state folder.",
    ),
)
"""The network options of ``check``, shared by ``scan submit`` (same names, same meaning)."""


@click.command()
@click.argument("domains", nargs=-1)
@click.option(
    "--file",
    "domain_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Domains to check, one per line ('#' comments).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document per domain (docs/check.schema.json)."
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the adoption table as CSV.",
)
@click.option(
    "--shard",
    callback=_shard,
    metavar="K/N",
    help="Check only shard K of N of the domains (the same split on every machine).",
)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option(
    "--workers",
    "workers_option",
    type=click.IntRange(0, 64),
    default=0,
    help="Processes for large batches (0: one per core, at most 4).",
)
@NETWORK_OPTIONS
@click.option("--explain", "explain_code", help="Print the explanation of a finding code and exit.")
@click.option(
    "--facts",
    "with_facts",
    is_flag=True,
    help="With --json: add what was observed (the facts the findings were judged from).",
)
@click.option(
    "--from-facts",
    "facts_source",
    metavar="FILE",
    help="Judge saved facts (from --json --facts; '-' reads stdin) instead of checking live.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("mtasts.toml"),
    show_default=True,
    envvar="MTASTS_CONFIG",
    help="With no DOMAIN: check every domain configured here, and what differs from what is published.",
)
def check(
    domains: tuple[str, ...],
    domain_file: Path | None,
    as_json: bool,
    csv_path: Path | None,
    shard: tuple[int, int] | None,
    concurrency: int,
    nameservers: tuple[str, ...],
    ca_file: Path | None,
    smtp_port: int,
    https_port: int,
    timeout: float,
    probes: int,
    max_mx: int,
    max_addresses: int,
    lab_dir: Path | None,
    explain_code: str | None,
    workers_option: int,
    config_path: Path,
    with_facts: bool,
    facts_source: str | None,
) -> None:
    """Check DOMAINS end to end as a sending MTA would (exit 0 clean, 1 errors, 2 usage)."""
    if explain_code:
        text = EXPLANATIONS.get(explain_code.strip().lower())
        if text is None:
            close = difflib.get_close_matches(explain_code.lower(), list(EXPLANATIONS), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise click.BadParameter(
                f"unknown code {explain_code!r}; {hint}known: {', '.join(sorted(EXPLANATIONS))}",
                param_hint="--explain",
            )
        click.echo(f"{explain_code}: {text}")
        return
    if with_facts and not as_json:
        raise click.UsageError("--facts goes with --json")
    if facts_source is not None:
        if domains or domain_file or shard:
            raise click.UsageError(
                "--from-facts judges saved facts: give no DOMAIN, --file or --shard"
            )
        gathered, problems = read_facts(facts_source)
        for problem in problems:
            echo(problem, fg="red", err=True)
        if not gathered:
            sys.exit(EXIT_USAGE)
        checks, interrupted = judge_all(gathered), False
    else:
        checks, problems, interrupted = _check_live(
            domains,
            domain_file,
            config_path,
            nameservers,
            ca_file,
            smtp_port,
            https_port,
            timeout,
            probes,
            max_mx,
            max_addresses,
            lab_dir,
            concurrency,
            workers_option,
            shard,
        )
    blocked = any(not c.smtp_reachable for c in checks)
    if as_json:
        for result in checks:
            document = to_json(result, with_facts=with_facts)
            # JSON Lines, one domain per line, whatever the count: one format to parse (#37).
            click.echo(json.dumps(document))
    else:
        if blocked:
            port = next(
                (p.port for c in checks for m in c.facts.mx for a in m.addresses for p in a.probes),
                smtp_port,
            )
            echo(
                f"{CheckCode.OUTBOUND_PORT_25_BLOCKED}: no MX address of any domain accepted a TCP"
                f" connection on port {port}: outbound SMTP is probably blocked where this runs, so"
                " the SMTP results are unknown.",
                fg="yellow",
            )
        detailed = checks if not domain_file and len(checks) <= 5 else []
        for result in detailed:
            render_detail(result)
            click.echo()
        if len(checks) > 1:
            render_adoption(checks)
    if csv_path:
        write_csv(csv_path, checks)
    if interrupted:
        # The shell's code for "stopped by SIGINT". os._exit, not sys.exit: the process
        # pool's exit hook joins its manager thread, which can wait for ever on workers
        # that were terminated mid-chunk; everything worth keeping is written and flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    failed = problems or any(
        c.verdict in (CheckVerdict.ERROR, CheckVerdict.UNKNOWN) for c in checks
    )
    sys.exit(EXIT_PROBLEMS if failed else EXIT_OK)


__all__ = ["EXIT_USAGE", "check"]
