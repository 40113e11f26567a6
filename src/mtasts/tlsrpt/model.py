"""The aggregate report of RFC 8460 §4 as typed values, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class PolicyType(StrEnum):
    """RFC 8460 §4.4 ``policy-type``."""

    STS = "sts"
    TLSA = "tlsa"
    NO_POLICY_FOUND = "no-policy-found"


class ResultType(StrEnum):
    """RFC 8460 §4.3: why a session failed."""

    # §4.3.1 negotiation failures
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # §4.3.2.1 DANE policy failures
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # §4.3.2.2 MTA-STS policy failures
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


@dataclass(frozen=True, slots=True)
class DateRange:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """The policy a sender applied: ``policy`` of RFC 8460 §4.4."""

    policy_type: PolicyType
    policy_domain: str
    policy_string: tuple[str, ...] | None = None
    mx_host: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One ``failure-details`` entry. ``result_type`` is the wire string, even if unknown."""

    result_type: str
    failed_session_count: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None

    @property
    def result(self) -> ResultType | None:
        """The RFC result type, or None for a sender's invented one."""
        try:
            return ResultType(self.result_type)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One entry of ``policies``: a policy with its session counts."""

    policy: ReportPolicy
    successful_sessions: int
    failed_sessions: int
    failure_details: tuple[FailureDetail, ...] = ()


@dataclass(frozen=True, slots=True)
class Report:
    """A TLS-RPT aggregate report.

    ``warnings`` lists what lenient parsing tolerated (it is not part of equality,
    so ``parse_report(r.to_json()) == r``).
    """

    organization_name: str
    date_range: DateRange
    contact_info: str
    report_id: str
    policies: tuple[PolicyResult, ...]
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # The rule each warning broke (``report.<rule>``), in the same order.
    warning_rules: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "organization-name": self.organization_name,
            "date-range": {
                "start-datetime": format_datetime(self.date_range.start),
                "end-datetime": format_datetime(self.date_range.end),
            },
            "contact-info": self.contact_info,
            "report-id": self.report_id,
            "policies": [_policy_result_dict(p) for p in self.policies],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @property
    def successful_sessions(self) -> int:
        return sum(p.successful_sessions for p in self.policies)

    @property
    def failed_sessions(self) -> int:
        return sum(p.failed_sessions for p in self.policies)


def format_datetime(value: datetime) -> str:
    """RFC 3339 as senders write it: ``Z`` for UTC."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _policy_result_dict(result: PolicyResult) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "policy-type": str(result.policy.policy_type),
        "policy-domain": result.policy.policy_domain,
    }
    if result.policy.policy_string is not None:
        policy["policy-string"] = list(result.policy.policy_string)
    if result.policy.mx_host:
        hosts = result.policy.mx_host
        policy["mx-host"] = hosts[0] if len(hosts) == 1 else list(hosts)
    out: dict[str, Any] = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": result.successful_sessions,
            "total-failure-session-count": result.failed_sessions,
        },
    }
    if result.failure_details:
        out["failure-details"] = [_detail_dict(d) for d in result.failure_details]
    return out


_DETAIL_FIELDS = (
    ("sending-mta-ip", "sending_mta_ip"),
    ("receiving-mx-hostname", "receiving_mx_hostname"),
    ("receiving-mx-helo", "receiving_mx_helo"),
    ("receiving-ip", "receiving_ip"),
    ("additional-information", "additional_information"),
    ("failure-reason-code", "failure_reason_code"),
)


def _detail_dict(detail: FailureDetail) -> dict[str, Any]:
    out: dict[str, Any] = {"result-type": detail.result_type}
    for wire, attr in _DETAIL_FIELDS:
        value = getattr(detail, attr)
        if value is not None:
            out[wire] = value
    out["failed-session-count"] = detail.failed_session_count
    return out
