"""RFC 8461 §3.3: what a fetched policy response means to a sender, decided once.

The network layer fetches ``https://mta-sts.<domain>/.well-known/mta-sts.txt``
and reports what happened as facts (:class:`PolicyResponse`). This module turns
those facts into the policy a sender applies, or into the failures a sender
would record, named by their RFC 8460 §4.3.2.2 result types. The checker and
the resolver both call :func:`judge_response`, so they cannot disagree.

>>> from dataclasses import dataclass
>>> @dataclass
... class Seen:
...     status: int | None = 200
...     content_type: str | None = "text/plain"
...     body: bytes | None = b"version: STSv1\\nmode: testing\\nmx: mx.example.com\\nmax_age: 86400\\n"
...     location: str | None = None
...     error_kind: str | None = None
...     error: str | None = None
...     certificate_names: tuple[str, ...] | None = ("mta-sts.example.com",)
>>> judge_response("mta-sts.example.com", Seen()).policy.mode
<Mode.TESTING: 'testing'>
>>> [f.reason for f in judge_response("mta-sts.example.com", Seen(status=301)).failures]
['http-301']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .errors import PolicyError
from .match import cert_matches
from .names import WELL_KNOWN_PATH
from .policy import Policy, diagnose_policy

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FailureKind(StrEnum):
    """The RFC 8460 §4.3.2.2 result type a sender records for a policy it could not use."""

    FETCH_ERROR = "sts-policy-fetch-error"
    INVALID = "sts-policy-invalid"
    WEBPKI_INVALID = "sts-webpki-invalid"


class PolicyResponse(Protocol):
    """What one HTTPS GET of the policy came back with: facts, nothing judged.

    ``error_kind`` is set when no response could be read (dns, connect, timeout, tls,
    too-large, protocol) or when the certificate chain did not verify (``webpki``);
    ``certificate_names`` are the DNS names of the leaf, None when none was seen.
    """

    @property
    def status(self) -> int | None: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def body(self) -> bytes | None: ...
    @property
    def location(self) -> str | None: ...
    @property
    def error_kind(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def certificate_names(self) -> tuple[str, ...] | None: ...


@dataclass(frozen=True, slots=True)
class PolicyFailure:
    """Why a sender cannot use the response: its result type, a stable reason, one line."""

    kind: FailureKind
    reason: str  # e.g. timeout, certificate-name, http-404, media-type, invalid-policy
    detail: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class FetchVerdict:
    """``policy`` is what a sender applies (None on any failure); ``served`` is the policy the
    body holds even when a sender must refuse it (say, for the wrong media type), so advice
    about its contents can still be given."""

    policy: Policy | None
    failures: tuple[PolicyFailure, ...] = ()
    served: Policy | None = None
    grammar: tuple[PolicyError, ...] = ()

    @property
    def first_failure(self) -> PolicyFailure | None:
        return self.failures[0] if self.failures else None


def media_type(content_type: str | None) -> str:
    """The media type without parameters, lower case (RFC 9110 §8.3.1)."""
    return (content_type or "").split(";")[0].strip().lower()


def _reject(kind: FailureKind, reason: str, detail: str, fix: str | None = None) -> FetchVerdict:
    return FetchVerdict(None, (PolicyFailure(kind, reason, detail, fix),))


def judge_response(host: str, response: PolicyResponse) -> FetchVerdict:
    """Apply RFC 8461 §3.3 to one response from ``host`` (``mta-sts.<domain>``)."""
    names = response.certificate_names
    shown = ", ".join(names or ()) or "unknown"
    if response.error_kind == "webpki":
        # §3.3: the certificate must chain to a trusted root; no policy otherwise.
        why = response.error or "the certificate does not verify"
        return _reject(
            FailureKind.WEBPKI_INVALID,
            "certificate-chain",
            f"the policy host's certificate does not verify: {why} (certificate names: {shown})",
            f"install a certificate valid for {host} from a public CA, with its full chain",
        )
    if response.error_kind is not None:
        why = response.error or response.error_kind
        return _reject(
            FailureKind.FETCH_ERROR, response.error_kind, f"the policy cannot be fetched: {why}"
        )
    if names is not None and not cert_matches(names, host):
        # §3.3 with RFC 6125: the certificate must name the policy host itself.
        return _reject(
            FailureKind.WEBPKI_INVALID,
            "certificate-name",
            f"the policy host's certificate does not verify: the certificate names {shown},"
            f" not {host}",
            f"install a certificate whose subjectAltName includes {host}",
        )
    url = f"https://{host}{WELL_KNOWN_PATH}"
    status = response.status
    if status != 200:
        if status in _REDIRECTS:
            # §3.3: "HTTP 3xx redirects MUST NOT be followed".
            detail = f"HTTP {status} redirect to {response.location}; senders must not follow redirects (RFC 8461 §3.3)"
            fix = f"serve the policy directly at {url} with status 200"
        else:
            detail, fix = f"HTTP {status} instead of 200", f"serve the policy file at {url}"
        return _reject(FailureKind.FETCH_ERROR, f"http-{status}", detail, fix)
    failures: list[PolicyFailure] = []
    media = media_type(response.content_type)
    if media != "text/plain":
        # §3.2: the policy is served as "text/plain".
        failures.append(
            PolicyFailure(
                FailureKind.INVALID,
                "media-type",
                f"the policy is served as {response.content_type or 'no media type'}, not text/plain (RFC 8461 §3.2)",
                "configure the web server to send Content-Type: text/plain for mta-sts.txt",
            )
        )
    diagnosis = diagnose_policy(response.body or b"")
    if diagnosis.policy is None:
        first = diagnosis.errors[0]
        more = f" (and {len(diagnosis.errors) - 1} more)" if len(diagnosis.errors) > 1 else ""
        failures.append(
            PolicyFailure(
                FailureKind.INVALID,
                "invalid-policy",
                f"{first}{more}",
                first.fix and f"write: {first.fix}",
            )
        )
    policy = diagnosis.policy if not failures else None
    return FetchVerdict(policy, tuple(failures), diagnosis.policy, diagnosis.errors)
