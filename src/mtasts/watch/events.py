"""What ``watch`` tells people: one vocabulary of event codes, and the event itself.

An event is a change between two observations (``policy-id-changed``) or a
problem that opened, is still open (a reminder) or was resolved
(``certificate-expiring``). Codes are stable: alert routes, webhook receivers
and the dashboard key on them. The webhook body is documented in
``docs/watch.md``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mtasts.check.findings import Severity


class EventCode(StrEnum):
    # MTA-STS, own domains
    STS_RECORD_ADDED = "sts-record-added"
    STS_RECORD_REMOVED = "sts-record-removed"
    DNS_UNAVAILABLE = "dns-unavailable"
    POLICY_ID_CHANGED = "policy-id-changed"
    POLICY_CHANGED_WITHOUT_ID = "policy-changed-without-id"
    MODE_CHANGED = "mode-changed"
    POLICY_MX_CHANGED = "policy-mx-changed"
    MAX_AGE_CHANGED = "max-age-changed"
    POLICY_UNREACHABLE = "policy-unreachable"
    POLICY_INCONSISTENT = "policy-inconsistent"
    # MX
    MX_CHANGED = "mx-changed"
    MX_ADDRESS_ADDED = "mx-address-added"
    MX_ADDRESS_REMOVED = "mx-address-removed"
    CERTIFICATE_CHANGED = "certificate-changed"
    CERTIFICATE_EXPIRING = "certificate-expiring"
    STARTTLS_DROPPED = "starttls-dropped"
    FINDING_OPENED = "finding-opened"
    FINDING_RESOLVED = "finding-resolved"
    # TLS-RPT reports in the store
    NEW_FAILURE_TYPE = "new-failure-type"
    FAILURE_SPIKE = "failure-spike"
    REPORTER_SILENT = "reporter-silent"
    READINESS_CHANGED = "readiness-changed"
    # Partners
    PARTNER_ADOPTED = "partner-adopted"
    PARTNER_DROPPED = "partner-dropped"
    PARTNER_DOWNGRADED = "partner-downgraded"
    PARTNER_TLSRPT_CHANGED = "partner-tlsrpt-changed"


class EventStatus(StrEnum):
    CHANGED = "changed"  # a one-off change: nothing stays open
    OPENED = "opened"  # a problem began
    REMINDER = "reminder"  # still open; said again at the reminder interval
    RESOLVED = "resolved"  # the problem is gone


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


def at_least(severity: Severity, floor: Severity) -> bool:
    return _SEVERITY_RANK[severity] >= _SEVERITY_RANK[floor]


@dataclass(frozen=True, slots=True)
class Event:
    code: EventCode
    domain: str
    subject: str  # the domain, an MX host, "host [address]", a policy-host address or a sender
    severity: Severity
    at: dt.datetime
    message: str  # one line naming the concrete thing
    status: EventStatus = EventStatus.CHANGED
    before: str | None = None
    after: str | None = None
    # Until when senders may still hold the previous policy (RFC 8461 §3.3: a cached
    # policy applies until its max_age runs out): set on every policy change.
    horizon: dt.datetime | None = None

    @property
    def key(self) -> str:
        """What makes two events about the same open problem the same."""
        return f"{self.code}|{self.subject}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": str(self.code),
            "status": str(self.status),
            "severity": str(self.severity),
            "domain": self.domain,
            "subject": self.subject,
            "message": self.message,
            "before": self.before,
            "after": self.after,
            "horizon": self.horizon.isoformat() if self.horizon else None,
            "at": self.at.isoformat(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        return cls(
            code=EventCode(raw["code"]),
            domain=raw["domain"],
            subject=raw["subject"],
            severity=Severity(raw["severity"]),
            at=dt.datetime.fromisoformat(raw["at"]),
            message=raw["message"],
            status=EventStatus(raw["status"]),
            before=raw.get("before"),
            after=raw.get("after"),
            horizon=dt.datetime.fromisoformat(raw["horizon"]) if raw.get("horizon") else None,
        )
