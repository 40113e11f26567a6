"""What one observation means for change detection: the few things that matter, compared.

A :class:`Snapshot` is cut from a check (its facts and its judgement). It keeps
what a sender acts on (the record's id, the policy as a sender parses it, the
MX set, each address's STARTTLS and certificate) and leaves out what varies from
run to run without meaning anything (timings, banners, cipher choice), so two
runs that saw the same deployment give equal snapshots. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from mtasts.check.findings import CheckCode, FindingCode, Severity
from mtasts.check.judge import DomainCheck
from mtasts.sts.fetch import FailureKind
from mtasts.tlsrpt import ResultType


@dataclass(frozen=True, slots=True)
class CertSnap:
    sha256: str | None
    not_after: dt.datetime
    names: tuple[str, ...]
    issuer: str

    def describe(self) -> str:
        short = (self.sha256 or "")[:16]
        return f"{', '.join(self.names) or '-'} until {self.not_after:%Y-%m-%d} (sha256 {short}…)"


@dataclass(frozen=True, slots=True)
class AddressSnap:
    host: str
    address: str
    starttls: bool | None  # None: not reached, so nothing is known
    certificate: CertSnap | None = None

    @property
    def subject(self) -> str:
        return f"{self.host} [{self.address}]"


# Error findings that have their own, more precise watch event.
_OWN_EVENT: frozenset[FindingCode] = frozenset(
    {
        CheckCode.POLICY_INCONSISTENT,
        CheckCode.DNS_ERROR,
        ResultType.STS_POLICY_FETCH_ERROR,
        ResultType.STS_WEBPKI_INVALID,
    }
)
_UNREACHABLE = {FailureKind.FETCH_ERROR, FailureKind.WEBPKI_INVALID}


@dataclass(frozen=True, slots=True)
class Snapshot:
    observed_at: dt.datetime
    sts: str  # present | absent | unavailable (DNS timed out or failed: nothing is known)
    sts_id: str | None = None
    policy_text: str | None = None  # canonical form of the policy a sender would apply
    mode: str | None = None
    max_age: int | None = None
    mx_patterns: tuple[str, ...] = ()
    unreachable: dict[str, str] = field(default_factory=dict)  # policy-host address -> why
    inconsistent: str | None = None
    mx_hosts: tuple[str, ...] | None = None  # None: the MX lookup failed
    addresses: dict[str, AddressSnap] = field(default_factory=dict)  # by subject
    errors: dict[str, str] = field(default_factory=dict)  # "code|subject" -> message
    tlsrpt: tuple[str, ...] | None = None  # the rua, None without a valid record
    adoption: str = "none"  # none | broken | testing | enforce (check's adoption column)
    verdict: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "observed_at": self.observed_at.isoformat(),
            "sts": self.sts,
            "sts_id": self.sts_id,
            "policy_text": self.policy_text,
            "mode": self.mode,
            "max_age": self.max_age,
            "mx_patterns": list(self.mx_patterns),
            "unreachable": self.unreachable,
            "inconsistent": self.inconsistent,
            "mx_hosts": list(self.mx_hosts) if self.mx_hosts is not None else None,
            "addresses": {
                k: {
                    "host": a.host,
                    "address": a.address,
                    "starttls": a.starttls,
                    "certificate": _cert(a.certificate),
                }
                for k, a in self.addresses.items()
            },
            "errors": self.errors,
            "tlsrpt": list(self.tlsrpt) if self.tlsrpt is not None else None,
            "adoption": self.adoption,
            "verdict": self.verdict,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Snapshot:
        return cls(
            observed_at=dt.datetime.fromisoformat(raw["observed_at"]),
            sts=raw["sts"],
            sts_id=raw.get("sts_id"),
            policy_text=raw.get("policy_text"),
            mode=raw.get("mode"),
            max_age=raw.get("max_age"),
            mx_patterns=tuple(raw.get("mx_patterns", ())),
            unreachable=dict(raw.get("unreachable", {})),
            inconsistent=raw.get("inconsistent"),
            mx_hosts=tuple(raw["mx_hosts"]) if raw.get("mx_hosts") is not None else None,
            addresses={
                k: AddressSnap(
                    a["host"], a["address"], a.get("starttls"), _cert_from(a.get("certificate"))
                )
                for k, a in raw.get("addresses", {}).items()
            },
            errors=dict(raw.get("errors", {})),
            tlsrpt=tuple(raw["tlsrpt"]) if raw.get("tlsrpt") is not None else None,
            adoption=raw.get("adoption", "none"),
            verdict=raw.get("verdict", "ok"),
        )


def _cert(cert: CertSnap | None) -> dict[str, Any] | None:
    if cert is None:
        return None
    return {
        "sha256": cert.sha256,
        "not_after": cert.not_after.isoformat(),
        "names": list(cert.names),
        "issuer": cert.issuer,
    }


def _cert_from(raw: dict[str, Any] | None) -> CertSnap | None:
    if raw is None:
        return None
    return CertSnap(
        raw.get("sha256"),
        dt.datetime.fromisoformat(raw["not_after"]),
        tuple(raw.get("names", ())),
        raw.get("issuer", ""),
    )


def snapshot(check: DomainCheck) -> Snapshot:
    """The parts of ``check`` (and its facts) that change detection compares."""
    facts = check.facts
    if facts.sts_txt.error is not None:
        sts = "unavailable"  # a timeout or SERVFAIL says nothing about the record (§3.1)
    elif check.sts_record is not None:
        sts = "present"
    else:
        sts = "absent"
    policy = check.policy
    unreachable: dict[str, str] = {}
    for host in check.policy_hosts:
        failure = host.verdict.first_failure
        if failure is not None and failure.kind in _UNREACHABLE:
            unreachable[host.fetch.address or host.fetch.url] = f"{failure.kind}: {failure.detail}"
    errors: dict[str, str] = {}
    inconsistent = None
    for finding in check.findings:
        if finding.code is CheckCode.POLICY_INCONSISTENT:
            inconsistent = finding.message
        if finding.severity is Severity.ERROR and finding.code not in _OWN_EVENT:
            errors[f"{finding.code}|{finding.subject}"] = finding.message
    addresses: dict[str, AddressSnap] = {}
    for mx in check.mx:
        for result in mx.addresses:
            probe = result.last
            leaf = probe.leaf
            cert = (
                CertSnap(leaf.sha256, leaf.not_after, leaf.dns_ids, leaf.issuer)
                if leaf is not None
                else None
            )
            starttls = probe.starttls if probe.connected else None
            snap = AddressSnap(mx.host, result.address, starttls, cert)
            addresses[snap.subject] = snap
    return Snapshot(
        observed_at=facts.observed_at,
        sts=sts,
        sts_id=check.sts_record.id if check.sts_record is not None else None,
        policy_text=str(policy) if policy is not None else None,
        mode=str(policy.mode) if policy is not None else None,
        max_age=policy.max_age if policy is not None else None,
        mx_patterns=tuple(str(p) for p in policy.mx) if policy is not None else (),
        unreachable=unreachable,
        inconsistent=inconsistent,
        mx_hosts=tuple(sorted(m.host for m in facts.mx)) if facts.mx_error is None else None,
        addresses=addresses,
        errors=errors,
        tlsrpt=tuple(check.tlsrpt_record.rua) if check.tlsrpt_record is not None else None,
        adoption=check.mode,
        verdict=str(check.verdict),
    )
