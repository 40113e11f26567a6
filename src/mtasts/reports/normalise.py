"""What a stranger's report may put in the store: text the database can hold, in bounded amounts.

Anyone can mail a rua mailbox or POST to an HTTPS rua, so every string of a report is
untrusted. PostgreSQL text cannot hold NUL, and a value longer than its ``String(n)``
column fails the transaction: one such report used to fail its whole batch, and the
watchers retried that batch forever. So before a report is stored its text is cleaned
(control characters removed, lengths cut to the columns, with a recorded warning), and
the rows one report can create are capped (security review #2 and #4). The raw bytes are
kept unchanged, so nothing the sender wrote is lost.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import replace

from mtasts.tlsrpt import FailureDetail, PolicyResult, Report, ReportPolicy, ResultType

# Column sizes of models.py, by what they hold.
NAME = 255
SHORT = 64
MAX_WARNINGS = 50  # warning lines kept per report; the rest become one count
MAX_DETAILS = 1000  # failure-detail rows per report; past it, one row per result type
MAX_POLICIES = 1000  # policy entries per report; past it, the report is quarantined

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (bar tab, newline), DEL, C1
_LINE_BREAKS = re.compile(r"[\t\n]")


def clean(value: str, limit: int | None = None, *, one_line: bool = True) -> str:
    """``value`` without control characters (or line breaks), cut to ``limit`` characters.

    A cut keeps a hash of the whole value, so two long values that share a prefix
    stay different (report ids are keys).
    """
    if value.isascii() and value.isprintable() and (limit is None or len(value) <= limit):
        return value  # nearly every value: printable ASCII holds nothing _scrub would change
    return _scrub(value, limit, one_line=one_line)


def _scrub(value: str, limit: int | None, *, one_line: bool) -> str:
    value = _CONTROL.sub("", value)
    if one_line:
        value = _LINE_BREAKS.sub(" ", value)
    if limit is not None and len(value) > limit:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        value = f"{value[: limit - 17]}~{digest}"
    return value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be stored


class _Cleaner:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def text(self, value: str, limit: int | None, where: str, *, one_line: bool = True) -> str:
        cleaned = clean(value, limit, one_line=one_line)
        if cleaned != value:
            what = (
                "cut to fit the store"
                if limit and len(value) > limit
                else "control characters removed"
            )
            self.warnings.append(f"{where}: {what}")
        return cleaned

    def optional(self, value: str | None, limit: int | None, where: str) -> str | None:
        return None if value is None else self.text(value, limit, where)


def storable(report: Report) -> Report:
    """``report`` as the store keeps it; what was changed is added to its warnings.

    Raises ValueError (with the reason) for a report too large to keep at all.
    """
    if len(report.policies) > MAX_POLICIES:
        raise ValueError(
            f"the report lists {len(report.policies):,} policies (limit {MAX_POLICIES:,})"
        )
    c = _Cleaner()
    policies = []
    details_left = MAX_DETAILS
    for i, result in enumerate(report.policies):
        where = f"policies[{i}]"
        policy = result.policy
        cleaned_policy = ReportPolicy(
            policy.policy_type,
            c.text(policy.policy_domain, NAME, f"{where}.policy.policy-domain"),
            None
            if policy.policy_string is None
            else tuple(
                c.text(s, None, f"{where}.policy.policy-string") for s in policy.policy_string
            ),
            tuple(c.text(m, None, f"{where}.policy.mx-host") for m in policy.mx_host),
        )
        details = [
            _detail(c, d, f"{where}.failure-details[{j}]")
            for j, d in enumerate(result.failure_details)
        ]
        if len(details) > details_left:
            kept, rest = details[:details_left], details[details_left:]
            details = kept + _merged(rest)
            c.warnings.append(
                f"{where}.failure-details: {len(rest):,} entries past the first {MAX_DETAILS:,} of the"
                " report are stored as one row per result type"
            )
        details_left = max(0, details_left - len(details))
        policies.append(
            PolicyResult(
                cleaned_policy, result.successful_sessions, result.failed_sessions, tuple(details)
            )
        )
    cleaned = Report(
        c.text(report.organization_name, NAME, "organization-name"),
        report.date_range,
        c.text(report.contact_info, NAME, "contact-info"),
        c.text(report.report_id, NAME, "report-id"),
        tuple(policies),
    )
    warnings = [clean(w, 500) for w in report.warnings] + c.warnings
    if len(warnings) > MAX_WARNINGS:
        more = len(warnings) - MAX_WARNINGS
        warnings = [*warnings[:MAX_WARNINGS], f"... and {more:,} more warnings (not stored)"]
    return replace(cleaned, warnings=tuple(warnings))


def _detail(c: _Cleaner, d: FailureDetail, where: str) -> FailureDetail:
    return FailureDetail(
        c.text(d.result_type, SHORT, f"{where}.result-type"),
        d.failed_session_count,
        c.optional(d.sending_mta_ip, SHORT, f"{where}.sending-mta-ip"),
        c.optional(d.receiving_mx_hostname, NAME, f"{where}.receiving-mx-hostname"),
        c.optional(d.receiving_mx_helo, NAME, f"{where}.receiving-mx-helo"),
        c.optional(d.receiving_ip, SHORT, f"{where}.receiving-ip"),
        c.optional(d.additional_information, 2000, f"{where}.additional-information"),
        c.optional(d.failure_reason_code, 2000, f"{where}.failure-reason-code"),
    )


def _merged(details: list[FailureDetail]) -> list[FailureDetail]:
    """One row per RFC 8460 result type (unknown types as one), with the sessions summed."""
    known = {r.value for r in ResultType}
    sessions: Counter[str] = Counter()
    for d in details:
        sessions[d.result_type if d.result_type in known else "unknown-result-type"] += (
            d.failed_session_count
        )
    return [FailureDetail(kind, count) for kind, count in sorted(sessions.items())]
