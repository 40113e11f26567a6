"""The stable JSON form of a check (schema: ``docs/check.schema.json``) and the adoption row."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mtasts.net.tls import Leaf

from .findings import CheckCode, Severity
from .judge import AddressResult, DomainCheck, MxResult, PolicyHostResult

SCHEMA_VERSION = 1


def _certificate(leaf: Leaf | None, now: dt.datetime) -> dict[str, Any] | None:
    if leaf is None:
        return None
    return {
        "names": list(leaf.dns_ids),
        "issuer": leaf.issuer,
        "not_before": leaf.not_before.isoformat(),
        "not_after": leaf.not_after.isoformat(),
        "days_left": leaf.days_left(now),
    }


def _policy_address(host: PolicyHostResult) -> dict[str, Any]:
    fetch, failure = host.fetch, host.verdict.first_failure
    return {
        "address": fetch.address,
        "status": fetch.status,
        "tries": fetch.tries,
        "result": str(failure.kind) if failure else None,
        "detail": failure.detail if failure else None,
        "policy": str(host.verdict.policy) if host.verdict.policy else None,
    }


def _address(result: AddressResult, now: dt.datetime) -> dict[str, Any]:
    probe = result.last
    return {
        "address": result.address,
        "result": result.result,
        "detail": result.detail or None,
        "connected": probe.connected,
        "starttls": probe.starttls,
        "tls_version": probe.tls_version,
        "cipher": probe.cipher,
        "certificate": _certificate(probe.leaf, now),
        "error": probe.error,
        "probes": len(result.probes),
        "seconds": round(sum(p.seconds for p in result.probes), 4),
    }


def _mx(mx: MxResult, now: dt.datetime) -> dict[str, Any]:
    return {
        "host": mx.host,
        "preference": mx.preference,
        "cname": mx.cname,
        "in_policy": mx.in_policy,
        "tlsa": mx.tlsa,
        "tlsa_validated": mx.tlsa_validated,
        "action": mx.action,
        "addresses": [_address(a, now) for a in mx.addresses],
    }


# The columns of adoption_row, in order: check's CSV, and scan's (which adds "provider").
ADOPTION_FIELDS = (
    "domain",
    "mta_sts",
    "tlsrpt",
    "errors",
    "warnings",
    "verdict",
    "main_finding",
)


def adoption_row(check: DomainCheck) -> dict[str, Any]:
    return {
        "domain": check.domain,
        "mta_sts": check.mode,
        "tlsrpt": check.tlsrpt_record is not None,
        "errors": sum(f.severity is Severity.ERROR for f in check.findings),
        "warnings": sum(f.severity is Severity.WARNING for f in check.findings),
        "verdict": str(check.verdict),
        # Why a partner fails, in one code (the first error, else the first warning), so a
        # partner list's CSV can be tracked over time (walkthrough #36).
        "main_finding": _main_finding(check),
    }


def _main_finding(check: DomainCheck) -> str | None:
    for severity in (Severity.ERROR, Severity.WARNING):
        for finding in check.findings:
            # A blocked port 25 is where the check ran, not the domain's: said once per run.
            if (
                finding.severity is severity
                and finding.code is not CheckCode.OUTBOUND_PORT_25_BLOCKED
            ):
                return str(finding.code)
    return None


def adoption_totals(checks: list[DomainCheck]) -> dict[str, int]:
    """How many domains are in each mode, broken, reporting: the line under an adoption table."""
    totals = {"domains": len(checks), "enforce": 0, "testing": 0, "none": 0, "broken": 0}
    for check in checks:
        totals[check.mode if check.mode in totals else "none"] += 1
    totals["errors"] = sum(
        1 for c in checks if any(f.severity is Severity.ERROR for f in c.findings)
    )
    totals["tlsrpt"] = sum(1 for c in checks if c.tlsrpt_record is not None)
    return totals


def to_json(check: DomainCheck, *, with_facts: bool = False) -> dict[str, Any]:
    """The document; ``with_facts`` adds what was observed, which ``--from-facts`` reads back."""
    fetch = check.fetch
    policy = check.policy
    now = check.facts.observed_at
    document = {
        "schema": SCHEMA_VERSION,
        "domain": check.domain,
        "verdict": str(check.verdict),
        "record": {
            "txt": check.sts_txt,
            "id": check.sts_record.id if check.sts_record else None,
        },
        "policy": None
        if fetch is None
        else {
            "url": fetch.url,
            "address": fetch.address,
            "status": fetch.status,
            "content_type": fetch.content_type,
            "location": fetch.location,
            "error": fetch.error,
            "certificate": _certificate(fetch.leaf, now),
            "mode": str(policy.mode) if policy else None,
            "max_age": policy.max_age if policy else None,
            "mx": [str(p) for p in policy.mx] if policy else [],
            "text": fetch.body.decode("utf-8", "replace") if fetch.body is not None else None,
            "addresses": [_policy_address(h) for h in check.policy_hosts],
        },
        "tlsrpt": {
            "txt": check.tlsrpt_txt,
            "rua": list(check.tlsrpt_record.rua) if check.tlsrpt_record else None,
        },
        "mx": [_mx(m, now) for m in check.mx],
        "findings": [f.to_dict() for f in check.findings],
        "summary": adoption_row(check),
        "smtp_reachable_from_here": check.smtp_reachable,
        "observed_at": now.isoformat(),
    }
    if with_facts:
        document["facts"] = check.facts.to_dict()
    return document
