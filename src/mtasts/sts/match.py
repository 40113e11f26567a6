"""Name matching: policy ``mx`` patterns (RFC 8461 §4.1) and certificate DNS-IDs (§4.2)."""

from __future__ import annotations

from collections.abc import Iterable

from .domain import normalise_host, to_a_label


def _comparable(name: str) -> str:
    name = normalise_host(name)
    if not name.isascii():
        name = to_a_label(name) or name
    return name


def _wildcard_matches(base: str, host: str) -> bool:
    # RFC 8461 §4.1/§4.2: "*" stands for exactly one whole left-most label.
    first, dot, rest = host.partition(".")
    return bool(first) and bool(dot) and rest == base


def pattern_matches(wildcard: bool, domain: str, host: str) -> bool:
    """Whether an MX host name is covered by one policy ``mx`` pattern (RFC 8461 §4.1)."""
    host = _comparable(host)
    domain = _comparable(domain)
    if not host or "*" in host:
        return False
    return _wildcard_matches(domain, host) if wildcard else host == domain


def cert_matches(dns_names: Iterable[str], host: str) -> bool:
    """Whether a certificate's DNS-IDs (subjectAltName dNSName values) cover ``host``.

    RFC 8461 §4.2 with RFC 6125 §6.4: case-insensitive, trailing root dot
    ignored, and a wildcard only as the complete left-most label matching
    exactly one label. We also refuse a wildcard directly under a single label
    (``*.com``), which no public CA may issue.

    >>> cert_matches(["*.example.com"], "mx1.example.com")
    True
    >>> cert_matches(["*.example.com"], "a.b.example.com")
    False
    """
    target = _comparable(host)
    if not target or "*" in target:
        return False
    for raw in dns_names:
        name = _comparable(raw)
        if name.startswith("*."):
            base = name[2:]
            if "*" in base or "." not in base:
                continue
            if _wildcard_matches(base, target):
                return True
        elif "*" not in name and name == target:
            return True
    return False
