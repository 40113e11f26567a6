"""Static checks of what an admin is about to publish or has received.

Each lint takes the text (no network), runs the RFC parser in diagnosing mode
and adds operational advice the RFCs leave to judgement, such as the seed
article's "start in testing with a one-day max_age".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mtasts import sts, tlsrpt
from mtasts.sts import Mode, Policy

from .findings import Severity

DAY = 86400
WEEK = 7 * DAY
TIMESTAMP_ID = re.compile(r"(19|20)\d{6}(T?\d{2,6})?\d*\Z")


@dataclass(frozen=True, slots=True)
class LintMessage:
    severity: Severity
    rule: str
    reference: str
    message: str
    line: int | None = None
    field: str | None = None
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": str(self.severity),
            "rule": self.rule,
            "reference": self.reference,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class LintResult:
    """The verdict on one input: ``valid`` means no error-level message."""

    input: str
    kind: str
    messages: tuple[LintMessage, ...]
    summary: str = ""
    parsed: dict[str, Any] | None = field(default=None)

    @property
    def valid(self) -> bool:
        return not any(m.severity is Severity.ERROR for m in self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "kind": self.kind,
            "valid": self.valid,
            "summary": self.summary,
            "messages": [m.to_dict() for m in self.messages],
            "parsed": self.parsed,
        }


def _from_sts(error: sts.StsError, severity: Severity) -> LintMessage:
    return LintMessage(
        severity,
        error.rule,
        f"RFC 8461 {error.section}",
        error.message,
        error.line,
        error.field,
        error.fix,
    )


def _from_tlsrpt(error: tlsrpt.TlsRptError, severity: Severity) -> LintMessage:
    return LintMessage(
        severity,
        error.rule,
        f"RFC 8460 {error.section}",
        error.message,
        None,
        error.field,
        error.fix,
    )


def describe_duration(seconds: int) -> str:
    for unit, size in (("day", DAY), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def policy_advice(policy: Policy) -> list[LintMessage]:
    """Operational advice on a valid policy (RFC 8461 §3.2, §8 and the seed article)."""
    advice: list[LintMessage] = []
    age = describe_duration(policy.max_age)
    if policy.mode is Mode.ENFORCE and policy.max_age < DAY:
        advice.append(
            LintMessage(
                Severity.WARNING,
                "advice.max-age-short",
                "RFC 8461 §3.2",
                f"max_age {policy.max_age} ({age}) is under a day in enforce mode: a short"
                " outage of the policy host lets an attacker strip TLS once it expires;"
                " RFC 8461 recommends weeks",
                field="max_age",
                fix=f"max_age: {WEEK}",
            )
        )
    if policy.mode is Mode.TESTING and policy.max_age > WEEK:
        advice.append(
            LintMessage(
                Severity.WARNING,
                "advice.max-age-long-testing",
                "RFC 8461 §3.2",
                f"max_age {policy.max_age} ({age}) is over a week while testing: a mistake"
                " published now stays cached by senders that long; start at one day",
                field="max_age",
                fix=f"max_age: {DAY}",
            )
        )
    if policy.mode is Mode.NONE:
        advice.append(
            LintMessage(
                Severity.INFO,
                "advice.mode-none",
                "RFC 8461 §8.3",
                "mode none withdraws MTA-STS: keep serving it with a new id for at least the"
                " previous max_age, then remove the _mta-sts record and the policy host",
                field="mode",
            )
        )
    for pattern in policy.mx:
        if "." not in pattern.domain:
            advice.append(
                LintMessage(
                    Severity.WARNING,
                    "advice.mx-single-label",
                    "RFC 8461 §4.1",
                    f"mx {str(pattern)!r} is a single label: MX host names are fully qualified",
                    field="mx",
                )
            )
    return advice


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    return {
        "version": policy.version,
        "mode": str(policy.mode),
        "max_age": policy.max_age,
        "mx": [str(p) for p in policy.mx],
        "extensions": [list(kv) for kv in policy.extensions],
        "canonical": str(policy),
    }


def lint_policy(data: str | bytes, name: str) -> LintResult:
    diagnosis = sts.diagnose_policy(data)
    messages = [_from_sts(e, Severity.ERROR) for e in diagnosis.errors]
    messages += [_from_sts(n, Severity.INFO) for n in diagnosis.notes]
    messages.sort(key=lambda m: m.line or 0)
    policy = diagnosis.policy
    if policy is None:
        return LintResult(name, "policy", tuple(messages))
    messages += policy_advice(policy)
    summary = (
        f"mode {policy.mode}, max_age {policy.max_age} ({describe_duration(policy.max_age)}),"
        f" mx {', '.join(str(p) for p in policy.mx) or '(none)'}"
    )
    return LintResult(name, "policy", tuple(messages), summary, policy_to_dict(policy))


def lint_sts_record(text: str, name: str = "sts-record") -> LintResult:
    diagnosis = sts.diagnose_record(text)
    messages = [_from_sts(e, Severity.ERROR) for e in diagnosis.errors]
    messages += [_from_sts(n, Severity.INFO) for n in diagnosis.notes]
    record = diagnosis.record
    if record is None:
        return LintResult(name, "sts-record", tuple(messages))
    if not TIMESTAMP_ID.match(record.id):
        messages.append(
            LintMessage(
                Severity.INFO,
                "advice.id-not-timestamp",
                "RFC 8461 §3.1",
                f"id {record.id!r} is not a timestamp: a UTC timestamp (20260521T101500)"
                " makes it obvious when the policy last changed and that a new id is new",
                field="id",
            )
        )
    parsed = {"id": record.id, "extensions": [list(kv) for kv in record.extensions]}
    return LintResult(name, "sts-record", tuple(messages), f"id {record.id}", parsed)


def lint_tlsrpt_record(text: str, name: str = "tlsrpt-record") -> LintResult:
    diagnosis = tlsrpt.diagnose_record(text)
    messages = [_from_tlsrpt(e, Severity.ERROR) for e in diagnosis.errors]
    messages += [_from_tlsrpt(n, Severity.INFO) for n in diagnosis.notes]
    record = diagnosis.record
    if record is None:
        return LintResult(name, "tlsrpt-record", tuple(messages))
    parsed = {"rua": list(record.rua), "extensions": [list(kv) for kv in record.extensions]}
    return LintResult(
        name, "tlsrpt-record", tuple(messages), "rua " + ", ".join(record.rua), parsed
    )


def lint_report(data: bytes, name: str, *, strict: bool = False) -> LintResult:
    try:
        # Strict mode still reads leniently first, so every deviation is listed, not the first.
        report = tlsrpt.parse_report(data)
    except tlsrpt.ReportError as exc:
        return LintResult(name, "report", (_from_tlsrpt(exc, Severity.ERROR),))
    level = Severity.ERROR if strict else Severity.WARNING
    rules = report.warning_rules
    if len(rules) != len(report.warnings):
        rules = ("report.deviation",) * len(report.warnings)
    messages = tuple(
        LintMessage(level, rule, "RFC 8460 §4.4", w)
        for w, rule in zip(report.warnings, rules, strict=True)
    )
    summary = (
        f"{report.organization_name} report {report.report_id}:"
        f" {len(report.policies)} policies, {report.successful_sessions} successful and"
        f" {report.failed_sessions} failed sessions"
    )
    return LintResult(name, "report", messages, summary, report.to_dict())
