"""A session from Postfix's log, joined with the resolver's answer, as an RFC 8460 result.

Pure: the same :class:`~mtasts.tlsrpt.datagram.Session` a libtlsrpt datagram
gives, so both intakes count alike. What the log cannot say alone:

- which policy applied: the resolver's answer in force when the session ran
  (``sts`` with its text and MX patterns, ``tlsa`` with the MX host's TLSA records
  when the resolver answered DANE, ``no-policy-found``, or the §4.3.2.2 failure of
  a policy it could not use);
- whether the certificate names the MX host, when Postfix did not check it (a
  ``testing`` policy is not passed to Postfix, which then only looks at the chain):
  the caller supplies a probe's verdict for that (MX host, address) as ``confirmed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtasts import sts
from mtasts.check.judge import result_type_for
from mtasts.resolver.answers import Answer
from mtasts.tlsrpt.datagram import Session, SessionPolicy
from mtasts.tlsrpt.model import FailureDetail, PolicyType, ReportPolicy, ResultType

from .postfix_log import LoggedSession

_POLICY_FAILURES = {
    ResultType.STS_POLICY_FETCH_ERROR.value,
    ResultType.STS_POLICY_INVALID.value,
    ResultType.STS_WEBPKI_INVALID.value,
}


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A probe's verdict on an MX address whose name Postfix did not check."""

    result: ResultType | None  # None: the certificate is valid for the MX host
    reason: str = ""


def needs_confirmation(logged: LoggedSession, answer: Answer | None) -> bool:
    """A session under a policy that Postfix verified only partly (or not at all)."""
    return (
        answer is not None
        and answer.kind == "policy"
        and logged.tls in ("Trusted", "Untrusted", "Anonymous")
        and logged.verify_code is None
    )


def _tlsa_policy(logged: LoggedSession, text: str) -> ReportPolicy:
    """RFC 8460 §4.4 for DANE: the policy domain is the TLSA base domain, the MX host
    (RFC 7672 §2.2.3), and the policy strings are its TLSA records."""
    host = logged.mx_host.lower().rstrip(".")
    records = tuple(
        rdata
        for line in text.splitlines()
        for owner, _, rdata in (line.partition(" "),)
        if owner.lower().rstrip(".") == host and rdata
    )
    return ReportPolicy(PolicyType.TLSA, host or logged.recipient_domain, records or None, ())


def _policy(logged: LoggedSession, answer: Answer | None) -> tuple[ReportPolicy, sts.Policy | None]:
    domain = logged.recipient_domain
    if answer is not None and answer.kind == "tlsa":
        return _tlsa_policy(logged, answer.policy or ""), None
    if answer is not None and answer.kind == "policy" and answer.policy:
        try:
            policy = sts.parse_policy(answer.policy)
        except sts.PolicyError:
            policy = None
        if policy is not None:
            strings = tuple(answer.policy.strip().splitlines())
            mx = tuple(str(p) for p in policy.mx)
            return ReportPolicy(PolicyType.STS, domain, strings, mx), policy
    if answer is not None and answer.kind in _POLICY_FAILURES:
        return ReportPolicy(PolicyType.STS, domain, None, ()), None
    return ReportPolicy(PolicyType.NO_POLICY_FOUND, domain, None, ()), None


def _detail(logged: LoggedSession, result: str, reason: str | None) -> FailureDetail:
    return FailureDetail(
        result_type=result,
        failed_session_count=1,
        receiving_mx_hostname=logged.mx_host or None,
        receiving_ip=logged.address or None,
        failure_reason_code=(reason or None) and reason[:200],
    )


def _negotiation_failure(logged: LoggedSession, dane: bool) -> tuple[str, str] | None:
    """The §4.3.1 result type of a session whose TLS failed, from Postfix's own words."""
    text = logged.detail
    if logged.verify_code is not None:
        if dane:
            # §4.3.2.1: under DANE the certificate is judged by the TLSA records, and none
            # of them matched it.
            return ResultType.TLSA_INVALID.value, (logged.verify_reason or "")
        return str(result_type_for(logged.verify_code)), (logged.verify_reason or "")
    if "was not offered" in text or "refused to start TLS" in text:
        return ResultType.STARTTLS_NOT_SUPPORTED.value, text
    if logged.tls is None and logged.status == "sent":
        return ResultType.STARTTLS_NOT_SUPPORTED.value, "delivered without TLS"
    if ("certificate" in text.lower() or "TLS" in text) and logged.status != "sent":
        return ResultType.VALIDATION_FAILURE.value, text
    return None


def join(
    logged: LoggedSession, answer: Answer | None, confirmed: Confirmed | None = None
) -> Session:
    """The RFC 8460 result of one logged session."""
    policy, parsed = _policy(logged, answer)
    details: list[FailureDetail] = []
    if answer is not None and answer.kind in _POLICY_FAILURES:
        # §4.3.2.2: the policy could not be used; that is the session's result for it.
        details.append(_detail(logged, answer.kind, answer.reason))
    else:
        failure = _negotiation_failure(logged, answer is not None and answer.kind == "tlsa")
        if failure is not None:
            details.append(_detail(logged, *failure))
        elif parsed is not None and not parsed.matches_mx(logged.mx_host):
            # RFC 8461 §4.1: the MX host must match one of the policy's mx patterns.
            details.append(
                _detail(
                    logged,
                    ResultType.VALIDATION_FAILURE.value,
                    f"{logged.mx_host} matches no mx pattern of the policy",
                )
            )
        elif confirmed is not None and confirmed.result is not None:
            details.append(_detail(logged, confirmed.result.value, confirmed.reason))
    return Session(
        logged.recipient_domain, "", (SessionPolicy(policy, bool(details), tuple(details)),)
    )


__all__ = ["Confirmed", "join", "needs_confirmation"]
