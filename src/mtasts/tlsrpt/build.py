"""Building the reports a sender sends (RFC 8460 §4, §5), from sessions counted per day.

Pure: a day's tallies in, the :class:`~mtasts.tlsrpt.model.Report`, its report-id,
its §5.1 file name, its gzip bytes and its §5.3 mail out. The counting and the
delivery live in :mod:`mtasts.reporter`.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32

from .model import DateRange, FailureDetail, PolicyResult, Report, ReportPolicy


@dataclass(frozen=True, slots=True)
class PolicyTally:
    """One policy's sessions of one day, with the identical failure details counted together."""

    policy: ReportPolicy
    successful: int
    failed: int
    details: tuple[FailureDetail, ...] = ()


def day_range(day: date) -> DateRange:
    """RFC 8460 §4.1: a report covers one whole UTC day, 00:00:00Z to 23:59:59Z."""
    start = datetime.combine(day, time(0, 0, 0), UTC)
    return DateRange(start, start + timedelta(days=1, seconds=-1))


def report_id(day: date, policy_domain: str, record: str, submitter: str) -> str:
    """Unique per (day, policy domain, record) and the same on every retry (§4.4), so a
    receiver that gets one report twice (two rua URIs, a retried POST) can tell."""
    digest = hashlib.sha256(record.encode()).hexdigest()[:10]
    return f"{day.isoformat()}T00:00:00Z_{policy_domain}_{digest}@{submitter}"


def _policy_key(tally: PolicyTally) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    p = tally.policy
    return (str(p.policy_type), p.policy_domain, p.policy_string or (), p.mx_host)


def _detail_key(detail: FailureDetail) -> tuple[str, ...]:
    return tuple(
        v or ""
        for v in (
            detail.result_type,
            detail.receiving_mx_hostname,
            detail.receiving_ip,
            detail.sending_mta_ip,
            detail.receiving_mx_helo,
            detail.failure_reason_code,
            detail.additional_information,
        )
    )


def build_report(
    day: date,
    *,
    organization: str,
    contact: str,
    report_id: str,
    tallies: Iterable[PolicyTally],
) -> Report:
    """The §4 report for one day; policies and details in a stable order (for golden tests,
    and so that two runs over the same sessions produce the same bytes)."""
    policies = tuple(
        PolicyResult(
            t.policy,
            t.successful,
            t.failed,
            tuple(sorted(t.details, key=_detail_key)),
        )
        for t in sorted(tallies, key=_policy_key)
    )
    return Report(organization, day_range(day), contact, report_id, policies)


def report_gzip(report: Report) -> bytes:
    # mtime 0: the same report is the same bytes, whenever it is (re)built.
    return gzip.compress(report.to_json().encode("utf-8"), mtime=0)


def report_filename(report: Report, submitter: str, policy_domain: str) -> str:
    """§5.1: ``submitter!policy-domain!begin!end!unique-id.json.gz`` (unix seconds)."""
    begin = int(report.date_range.start.timestamp())
    end = int(report.date_range.end.timestamp())
    unique = hashlib.sha256(report.report_id.encode()).hexdigest()[:12]
    return f"{submitter}!{policy_domain}!{begin}!{end}!{unique}.json.gz"


def _summary(report: Report, policy_domain: str) -> str:
    lines = [
        f"This is an aggregate TLS report (RFC 8460) from {report.organization_name}",
        f"for {policy_domain}, covering {report.date_range.start:%Y-%m-%d} (UTC).",
        "",
    ]
    for result in report.policies:
        p = result.policy
        lines.append(
            f"{p.policy_type} policy of {p.policy_domain}: {result.successful_sessions} successful"
            f" and {result.failed_sessions} failed TLS sessions"
        )
        for d in result.failure_details:
            where = d.receiving_mx_hostname or d.receiving_ip or "an MX host"
            lines.append(f"  {d.failed_session_count} x {d.result_type} at {where}")
    lines += ["", f"Report-ID: {report.report_id}", f"Contact: {report.contact_info}", ""]
    return "\n".join(lines)


def report_mail(
    report: Report,
    *,
    policy_domain: str,
    submitter: str,
    sender: str,
    recipients: Sequence[str],
    date_header: str,
    message_id: str,
) -> bytes:
    """The §5.3 message, CRLF line ends, ready to DKIM-sign.

    ``multipart/report; report-type="tlsrpt"``: a human-readable part, then the report
    as ``application/tlsrpt+gzip`` named as §5.1 says. ``TLS-Report-Domain`` and
    ``TLS-Report-Submitter`` are §5.3's headers; ``TLS-Required: No`` (RFC 8689 §5)
    asks every MTA on the way to deliver it even when TLS fails, which is when a
    report matters most (§3).
    """
    # compat32 keeps the §5.1 name one quoted parameter (the newer policy splits a long one
    # into RFC 2231 continuations, which some receivers never reassemble).
    policy = compat32.clone(linesep="\r\n")
    boundary = "tlsrpt-" + hashlib.sha256(report.report_id.encode()).hexdigest()[:24]
    message = MIMEMultipart("report", boundary=boundary, report_type="tlsrpt", policy=policy)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = (
        f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{report.report_id}>"
    )
    message["Date"] = date_header
    message["Message-ID"] = message_id
    message["TLS-Report-Domain"] = policy_domain
    message["TLS-Report-Submitter"] = submitter
    message["TLS-Required"] = "No"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: nobody auto-replies to a report
    summary = _summary(report, policy_domain)
    charset = "us-ascii" if summary.isascii() else "utf-8"
    message.attach(MIMEText(summary, "plain", charset, policy=policy))
    attachment = MIMEApplication(
        report_gzip(report), "tlsrpt+gzip", name=report_filename(report, submitter, policy_domain)
    )
    attachment.policy = policy
    attachment.add_header(
        "Content-Disposition",
        "attachment",
        filename=report_filename(report, submitter, policy_domain),
    )
    message.attach(attachment)
    return message.as_bytes(policy=policy)


__all__ = [
    "PolicyTally",
    "build_report",
    "day_range",
    "report_filename",
    "report_gzip",
    "report_id",
    "report_mail",
]
