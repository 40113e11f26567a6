"""The datagrams libtlsrpt sends (Postfix 3.10+): one TLS session's outcome, as typed values.

One datagram is one JSON object per delivery attempt: the next-hop domain ``d``,
the TLSRPT record text ``pr`` the MTA found, and ``policies``, each with its
``policy-type`` code (1 tlsa, 2 sts, 9 no-policy-found), the policy's domain,
strings and MX patterns, the failure details (short keys) and ``f``, the
session's final result. Optional keys are left out, never null. This module
only reads bytes: the socket is :mod:`mtasts.reporter.datagrams`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import TlsRptError
from .model import FailureDetail, PolicyType, ReportPolicy, ResultType

MAX_DATAGRAM = 1024 * 1024  # a session with many MX hosts is a few KiB; this is abuse

_POLICY_TYPES = {1: PolicyType.TLSA, 2: PolicyType.STS, 9: PolicyType.NO_POLICY_FOUND}
_RESULT_CODES = {
    201: ResultType.STARTTLS_NOT_SUPPORTED,
    202: ResultType.CERTIFICATE_HOST_MISMATCH,
    203: ResultType.CERTIFICATE_NOT_TRUSTED,
    204: ResultType.CERTIFICATE_EXPIRED,
    205: ResultType.VALIDATION_FAILURE,
    301: ResultType.STS_POLICY_FETCH_ERROR,
    302: ResultType.STS_POLICY_INVALID,
    303: ResultType.STS_WEBPKI_INVALID,
    304: ResultType.TLSA_INVALID,
    305: ResultType.DNSSEC_INVALID,
    306: ResultType.DANE_REQUIRED,
}
# libtlsrpt's own "the MTA never finished this policy" marker: the session did fail, so it is
# counted, as a validation-failure that says why.
_UNFINISHED = 901
_DETAIL_KEYS = {
    "s": "sending_mta_ip",
    "n": "receiving_mx_hostname",
    "h": "receiving_mx_helo",
    "r": "receiving_ip",
    "a": "additional_information",
    "f": "failure_reason_code",
}
_MAX_FIELD = 1024  # any one string; RFC 8460 fields are host names, addresses and short codes


class DatagramError(TlsRptError):
    """A datagram that is not what libtlsrpt sends; it is counted and skipped, never fatal."""


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """One policy a session was judged against, and how the session ended for it."""

    policy: ReportPolicy
    failed: bool
    details: tuple[FailureDetail, ...] = ()


@dataclass(frozen=True, slots=True)
class Session:
    """One TLS session's outcome for one recipient domain."""

    domain: str
    record: str  # the TLSRPT record text the MTA found ("" when it sent none)
    policies: tuple[SessionPolicy, ...]


def _fail(message: str, field: str | None = None) -> DatagramError:
    return DatagramError(message, rule="datagram", section="§4", field=field)


def _text(value: Any, where: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _fail("is missing", where)
        return None
    if not isinstance(value, str):
        raise _fail(f"must be a string, not {type(value).__name__}", where)
    if len(value) > _MAX_FIELD:
        raise _fail(f"is {len(value)} characters long (limit {_MAX_FIELD})", where)
    return value


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _fail("must be a list of strings", where)
    return tuple(_text(v, f"{where}[{i}]", required=True) or "" for i, v in enumerate(value))


def _int(value: Any, where: str) -> int:
    # bool is an int in Python; a JSON true is not a code.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"must be an integer, not {json.dumps(value)[:40]}", where)
    return value


def _detail(raw: Any, where: str) -> FailureDetail:
    if not isinstance(raw, dict):
        raise _fail("must be an object", where)
    code = _int(raw.get("c"), f"{where}.c")
    fields = {attr: _text(raw.get(key), f"{where}.{key}") for key, attr in _DETAIL_KEYS.items()}
    if code == _UNFINISHED:
        result = ResultType.VALIDATION_FAILURE.value
        fields["failure_reason_code"] = fields["failure_reason_code"] or "policy-not-finished"
    elif code in _RESULT_CODES:
        result = _RESULT_CODES[code].value
    else:
        raise _fail(f"{code} is not a result type code libtlsrpt sends", f"{where}.c")
    return FailureDetail(result_type=result, failed_session_count=1, **fields)


def _policy(raw: Any, domain: str, where: str) -> SessionPolicy:
    if not isinstance(raw, dict):
        raise _fail("must be an object", where)
    code = _int(raw.get("policy-type"), f"{where}.policy-type")
    if code not in _POLICY_TYPES:
        raise _fail(
            f"{code} is not 1 (tlsa), 2 (sts) or 9 (no-policy-found)", f"{where}.policy-type"
        )
    policy_type = _POLICY_TYPES[code]
    # libtlsrpt leaves policy-domain out for no-policy-found; a report must name one
    # (RFC 8460 §4.4), and strict receivers reject a report without it: use the domain.
    policy_domain = _text(raw.get("policy-domain"), f"{where}.policy-domain") or domain
    strings = _strings(raw.get("policy-string"), f"{where}.policy-string")
    mx_host = _strings(raw.get("mx-host"), f"{where}.mx-host") or ()
    raw_details = raw.get("failure-details", [])
    if not isinstance(raw_details, list):
        raise _fail("must be a list", f"{where}.failure-details")
    details = tuple(_detail(d, f"{where}.failure-details[{i}]") for i, d in enumerate(raw_details))
    final = _int(raw.get("f"), f"{where}.f")
    if final not in (0, 1):
        raise _fail(f"{final} is not 0 (success) or 1 (failure)", f"{where}.f")
    return SessionPolicy(
        ReportPolicy(policy_type, policy_domain.lower().rstrip("."), strings, mx_host),
        final == 1,
        details,
    )


def parse_datagram(data: bytes) -> Session:
    """One datagram's session; raise :class:`DatagramError` naming what is wrong.

    >>> s = parse_datagram(b'{"dpv":"1","d":"example.net","pr":"v=TLSRPTv1;rua=mailto:r@example.net",'
    ...     b'"policies":[{"policy-type":9,"t":0,"f":0}]}')
    >>> s.policies[0].policy.policy_domain, s.policies[0].failed
    ('example.net', False)
    """
    if len(data) > MAX_DATAGRAM:
        raise _fail(f"{len(data):,} bytes (limit {MAX_DATAGRAM:,})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"not UTF-8 (byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _fail(f"not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(raw, dict):
        raise _fail("not a JSON object")
    version = raw.get("dpv")
    if version != "1":
        raise _fail(f"protocol version {json.dumps(version)[:20]} (only '1' is known)", "dpv")
    domain = (_text(raw.get("d"), "d", required=True) or "").lower().rstrip(".")
    if not domain:
        raise _fail("is empty", "d")
    record = _text(raw.get("pr"), "pr") or ""
    raw_policies = raw.get("policies")
    if not isinstance(raw_policies, list) or not raw_policies:
        raise _fail("must be a non-empty list", "policies")
    policies = tuple(_policy(p, domain, f"policies[{i}]") for i, p in enumerate(raw_policies))
    return Session(domain, record, policies)


__all__ = ["MAX_DATAGRAM", "DatagramError", "Session", "SessionPolicy", "parse_datagram"]
