"""The stable JSON form of a check (schema: ``docs/check.schema.json``) and the adoption row."""

from __future__ import annotations

from typing import Any

from mtasts.net.tls import Leaf

from .checker import AddressResult, DomainCheck, MxResult
from .findings import Severity

SCHEMA_VERSION = 1


def _certificate(leaf: Leaf | None) -> dict[str, Any] | None:
    if leaf is None:
        return None
    return {
        "names": list(leaf.dns_ids),
        "issuer": leaf.issuer,
        "not_before": leaf.not_before.isoformat(),
        "not_after": leaf.not_after.isoformat(),
        "days_left": leaf.days_left(),
    }


def _address(result: AddressResult) -> dict[str, Any]:
    probe = result.last
    return {
        "address": result.address,
        "result": result.result,
        "detail": result.detail or None,
        "connected": probe.connected,
        "starttls": probe.starttls,
        "tls_version": probe.tls_version,
        "cipher": probe.cipher,
        "certificate": _certificate(probe.leaf),
        "error": probe.error,
        "probes": len(result.probes),
        "seconds": round(sum(p.seconds for p in result.probes), 4),
    }


def _mx(mx: MxResult) -> dict[str, Any]:
    return {
        "host": mx.host,
        "preference": mx.preference,
        "cname": mx.cname,
        "in_policy": mx.in_policy,
        "tlsa": mx.tlsa,
        "tlsa_validated": mx.tlsa_validated,
        "action": mx.action,
        "addresses": [_address(a) for a in mx.addresses],
    }


def adoption_row(check: DomainCheck) -> dict[str, Any]:
    return {
        "domain": check.domain,
        "mta_sts": check.mode,
        "tlsrpt": check.tlsrpt_record is not None,
        "errors": sum(f.severity is Severity.ERROR for f in check.findings),
        "warnings": sum(f.severity is Severity.WARNING for f in check.findings),
        "verdict": check.verdict,
    }


def to_json(check: DomainCheck, *, smtp_reachable: bool = True) -> dict[str, Any]:
    """The document; ``smtp_reachable`` False says port 25 was blocked where the check ran."""
    fetch = check.fetch
    policy = check.policy
    return {
        "schema": SCHEMA_VERSION,
        "domain": check.domain,
        "verdict": check.verdict,
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
            "certificate": _certificate(fetch.leaf),
            "mode": str(policy.mode) if policy else None,
            "max_age": policy.max_age if policy else None,
            "mx": [str(p) for p in policy.mx] if policy else [],
            "text": fetch.body.decode("utf-8", "replace") if fetch.body is not None else None,
        },
        "tlsrpt": {
            "txt": check.tlsrpt_txt,
            "rua": list(check.tlsrpt_record.rua) if check.tlsrpt_record else None,
        },
        "mx": [_mx(m) for m in check.mx],
        "findings": [f.to_dict() for f in check.findings],
        "summary": adoption_row(check),
        "smtp_reachable_from_here": smtp_reachable,
    }
