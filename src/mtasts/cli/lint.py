"""``mtasts lint``: validate a policy, a record or a report without touching the network."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import click

from mtasts.check.findings import Severity
from mtasts.check.lint import (
    LintMessage,
    LintResult,
    lint_policy,
    lint_report,
    lint_sts_record,
    lint_tlsrpt_record,
)
from mtasts.tlsrpt import ReportError

from .output import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, echo, print_json

_COLOURS = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def format_message(name: str, msg: LintMessage) -> str:
    """One line: input, line/field, severity, message, rule and RFC section, then the fix."""
    where = f"{name}:{msg.line}" if msg.line is not None else name
    if msg.field and msg.line is None and msg.field not in msg.message:
        where += f": {msg.field}"
    text = f"{where}: {msg.severity}: {msg.message} [{msg.rule}, {msg.reference}]"
    if msg.fix:
        text += f" fix: {msg.fix}"
    return text


def render(results: Iterable[LintResult], as_json: bool) -> int:
    results = list(results)
    if as_json:
        print_json(
            {"valid": all(r.valid for r in results), "results": [r.to_dict() for r in results]}
        )
    else:
        for result in results:
            for msg in result.messages:
                echo(format_message(result.input, msg), fg=_COLOURS[msg.severity])
            if result.valid:
                echo(f"{result.input}: valid {result.kind}: {result.summary}", fg="green")
            else:
                errors = sum(m.severity is Severity.ERROR for m in result.messages)
                echo(
                    f"{result.input}: invalid {result.kind} ({errors} error(s))",
                    fg="red",
                    bold=True,
                )
    if any(m.rule == "input.unreadable" for r in results for m in r.messages):
        return EXIT_USAGE  # a file that cannot be read is a usage error, not an invalid text
    return EXIT_OK if all(r.valid for r in results) else EXIT_PROBLEMS


def _read(path: str) -> tuple[str, bytes]:
    if path == "-":
        return "<stdin>", sys.stdin.buffer.read()
    with open(path, "rb") as handle:
        return path, handle.read()


def _inputs(paths: tuple[str, ...]) -> list[tuple[str, bytes] | tuple[str, OSError]]:
    out: list[tuple[str, bytes] | tuple[str, OSError]] = []
    for path in paths:
        try:
            out.append(_read(path))
        except OSError as exc:
            out.append((path, exc))
    return out


def _unreadable(path: str, exc: OSError, kind: str) -> LintResult:
    reason = exc.strerror or str(exc)
    return LintResult(
        path,
        kind,
        (LintMessage(Severity.ERROR, "input.unreadable", "-", f"cannot read: {reason}"),),
    )


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a machine-readable result."
)


@click.group()
def lint() -> None:
    """Validate MTA-STS and TLS-RPT text offline (exit 0 valid, 1 invalid, 2 usage)."""


@lint.command("policy")
@click.argument("files", nargs=-1, required=True, metavar="FILE|-...")
@json_option
def lint_policy_cmd(files: tuple[str, ...], as_json: bool) -> None:
    """Check mta-sts.txt policy files (RFC 8461 §3.2); '-' reads standard input."""
    results = [
        _unreadable(name, data, "policy") if isinstance(data, OSError) else lint_policy(data, name)
        for name, data in _inputs(files)
    ]
    sys.exit(render(results, as_json))


@lint.command("sts-record")
@click.argument("texts", nargs=-1, required=True, metavar="TEXT...")
@json_option
def lint_sts_record_cmd(texts: tuple[str, ...], as_json: bool) -> None:
    """Check the text of an _mta-sts TXT record (RFC 8461 §3.1)."""
    sys.exit(render((lint_sts_record(t, repr(t)) for t in texts), as_json))


@lint.command("tlsrpt-record")
@click.argument("texts", nargs=-1, required=True, metavar="TEXT...")
@json_option
def lint_tlsrpt_record_cmd(texts: tuple[str, ...], as_json: bool) -> None:
    """Check the text of an _smtp._tls TXT record (RFC 8460 §3)."""
    sys.exit(render((lint_tlsrpt_record(t, repr(t)) for t in texts), as_json))


@lint.command("report")
@click.argument("files", nargs=-1, required=True, metavar="FILE|-...")
@click.option("--strict", is_flag=True, help="Reject every deviation from the RFC 8460 schema.")
@json_option
def lint_report_cmd(files: tuple[str, ...], strict: bool, as_json: bool) -> None:
    """Check TLS-RPT report files, JSON or gzip (RFC 8460 §4)."""
    results: list[LintResult] = []
    for name, data in _inputs(files):
        if isinstance(data, OSError):
            results.append(_unreadable(name, data, "report"))
            continue
        try:
            found = _report_files(name, data)
        except ReportError as exc:
            results.append(
                LintResult(
                    name,
                    "report",
                    (LintMessage(Severity.ERROR, exc.rule, f"RFC 8460 {exc.section}", str(exc)),),
                )
            )
            continue
        results += [lint_report(part, where, strict=strict) for where, part in found]
    sys.exit(render(results, as_json))


_ZIP = b"PK\x03\x04"


def _report_files(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """The report files in an input, as `reports ingest` finds them: a report file itself,
    the members of a zip, or the report parts of a mail (walkthrough #41)."""
    # Imported here: the mail parser (email.policy) is ~20 ms that lint's other commands,
    # run from editors and pre-commit hooks, should not wait for.
    from mtasts.tlsrpt.mail import expand_zip, extract_reports

    if data.startswith(_ZIP):
        return [(f"{name}!{member}", content) for member, content in expand_zip(data)]
    if data[:2] == b"\x1f\x8b" or data.lstrip()[:1] in (b"{", b"["):
        return [(name, data)]
    mail = extract_reports(data)
    if not mail.parts:
        return [(name, data)]  # the report linter then says what it is not
    out: list[tuple[str, bytes]] = []
    for part in mail.parts:
        where = f"{name} ({part.filename or part.content_type})"
        if part.data.startswith(_ZIP):
            out += [(f"{where}!{m}", c) for m, c in expand_zip(part.data)]
        else:
            out.append((where, part.data))
    return out
