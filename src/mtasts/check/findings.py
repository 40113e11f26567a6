"""Findings: what the checker concludes, in one vocabulary shared with TLS-RPT.

A finding's code is either an RFC 8460 §4.3 result type (``tlsrpt.ResultType``),
where one describes the failure, so a failure seen in a report leads straight
to the check that explains it, or a :class:`CheckCode` for what only a checker
sees. :data:`RULES` gives every code its severity, its plain-words explanation
and a generic fix; the message and a concrete fix, naming the host or the line,
are written where the finding is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mtasts.tlsrpt import ResultType


class Severity(StrEnum):
    """How bad a finding or a lint message is; ``info`` is advice, never a failure."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class CheckCode(StrEnum):
    """What a checker sees that no TLS-RPT result type names."""

    DOMAIN_NOT_FOUND = "domain-not-found"
    STS_NOT_PUBLISHED = "sts-not-published"
    STS_RECORD_MULTIPLE = "sts-record-multiple"
    STS_RECORD_INVALID = "sts-record-invalid"
    DNS_ERROR = "dns-error"
    POLICY_INCONSISTENT = "policy-inconsistent"
    MX_NOT_IN_POLICY = "mx-not-in-policy"
    MX_PATTERN_UNUSED = "mx-pattern-unused"
    CERTIFICATE_EXPIRING = "certificate-expiring"
    MX_UNREACHABLE = "mx-unreachable"
    OUTBOUND_PORT_25_BLOCKED = "outbound-port-25-blocked"
    MAX_AGE_SHORT = "max-age-short"
    MAX_AGE_LONG_TESTING = "max-age-long-testing"
    MODE_NONE = "mode-none"
    TLSRPT_MISSING = "tlsrpt-missing"
    TLSRPT_INVALID = "tlsrpt-invalid"
    ID_NOT_TIMESTAMP = "id-not-timestamp"
    MX_CNAME = "mx-cname"
    DANE_TLSA = "dane-tlsa"
    MX_TOO_MANY = "mx-too-many"
    MX_ADDRESSES_TOO_MANY = "mx-addresses-too-many"
    CONFIG_DRIFT = "config-drift"
    CHECK_FAILED = "check-failed"
    MX_NONE = "mx-none"


FindingCode = ResultType | CheckCode


class CheckVerdict(StrEnum):
    """A domain's verdict: its worst finding, or UNKNOWN when the SMTP facts could not be
    seen (outbound port 25 blocked where the check ran) and nothing else failed."""

    OK = "ok"
    WARNING = "warning"
    ERROR = "error"
    UNKNOWN = "unknown"


# The result types a checker can observe: the DANE ones (§4.3.2.1) need a DANE
# validator, which a checker of MTA-STS does not run.
CHECKED_RESULT_TYPES = (
    ResultType.STARTTLS_NOT_SUPPORTED,
    ResultType.CERTIFICATE_HOST_MISMATCH,
    ResultType.CERTIFICATE_EXPIRED,
    ResultType.CERTIFICATE_NOT_TRUSTED,
    ResultType.VALIDATION_FAILURE,
    ResultType.STS_POLICY_FETCH_ERROR,
    ResultType.STS_POLICY_INVALID,
    ResultType.STS_WEBPKI_INVALID,
)


@dataclass(frozen=True, slots=True)
class Rule:
    """A code's severity (per-MX failures are warnings while no policy is in force), why it
    matters, and the fix when no more concrete one is known."""

    severity: Severity
    explanation: str
    fix: str | None = None


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO
_R, _C = ResultType, CheckCode

RULES: dict[FindingCode, Rule] = {
    _C.DOMAIN_NOT_FOUND: Rule(_E, "The domain does not exist in DNS (NXDOMAIN): no MX, no MTA-STS and no TLS-RPT record can exist below it, and senders bounce mail to it.", "check the spelling, or register and delegate the domain"),
    _C.STS_NOT_PUBLISHED: Rule(_W, "Without an _mta-sts record, STARTTLS to this domain is opportunistic: an attacker on the path can delete the STARTTLS offer and senders fall back to plaintext without telling anyone.", "publish a policy and its record (mtasts init, mtasts records)"),
    _C.STS_RECORD_MULTIPLE: Rule(_E, "RFC 8461 section 3.1: when more than one TXT record begins with v=STSv1, senders must assume the domain has no policy at all.", "delete all but one of the _mta-sts records"),
    _C.STS_RECORD_INVALID: Rule(_E, "Senders ignore a syntactically invalid _mta-sts record, so the policy is never applied (RFC 8461 section 3.1).", "publish a record of the form v=STSv1; id=YYYYMMDDTHHMMSS;"),
    _C.DNS_ERROR: Rule(_E, "A DNS lookup failed (SERVFAIL or timeout). Senders cannot tell whether a policy exists; a cached policy keeps applying, a new sender sees none.", "make every authoritative server of the zone answer"),
    _R.STS_POLICY_FETCH_ERROR: Rule(_E, "Senders could not fetch the policy file. RFC 8461 section 3.3 requires HTTPS, status 200 and forbids following redirects; senders report this as sts-policy-fetch-error and apply no policy (or a cached one).", "serve the policy at https://mta-sts.<domain>/.well-known/mta-sts.txt with status 200"),
    _R.STS_POLICY_INVALID: Rule(_E, "The policy was fetched but senders reject it: it must be text/plain and follow the grammar of RFC 8461 section 3.2.", "serve a policy that mtasts lint accepts, as text/plain"),
    _R.STS_WEBPKI_INVALID: Rule(_E, "The HTTPS certificate of the policy host does not verify for mta-sts.<domain>, so the policy cannot be trusted (RFC 8461 section 3.3).", "install a certificate valid for mta-sts.<domain> from a public CA"),
    _C.POLICY_INCONSISTENT: Rule(_E, "The policy host has several addresses and they do not serve the same policy: each sender gets whichever address it reaches, so some fail or cache another policy, intermittently (a load balancer's bad backend, or a stale server still in DNS).", "serve one policy from every address of mta-sts.<domain>, or remove the stale address"),
    _C.MX_NOT_IN_POLICY: Rule(_E, "An MX host name is not matched by any mx line of the policy. Under enforce, senders refuse to deliver to that MX (RFC 8461 section 4.1).", "add the MX host to the policy's mx lines (and change the id)"),
    _C.MX_PATTERN_UNUSED: Rule(_W, "A policy mx pattern matches none of the domain's MX hosts: probably a stale entry from a decommissioned server.", "remove the stale mx line (and change the id)"),
    _R.CERTIFICATE_HOST_MISMATCH: Rule(_E, "The MX host's certificate is not valid for the MX name the policy lists. The mx values are the names the certificate must prove, not the server's own name: a CNAME to a provider host whose certificate names only the provider fails this (RFC 8461 section 4.2).", "install a certificate whose subjectAltName includes the MX name"),
    _R.CERTIFICATE_EXPIRED: Rule(_E, "The MX host presents an expired certificate; MTA-STS senders treat the connection as failed.", "renew the certificate"),
    _R.CERTIFICATE_NOT_TRUSTED: Rule(_E, "The certificate chain does not lead to a trusted CA (self-signed, private CA, or a missing intermediate).", "serve a certificate from a public CA with its full chain"),
    _C.CERTIFICATE_EXPIRING: Rule(_W, "The certificate expires soon; renew it before senders start failing.", "renew the certificate"),
    _R.STARTTLS_NOT_SUPPORTED: Rule(_E, "The MX host did not offer STARTTLS. Either the server does not support it or something on the path removed the offer (the STARTTLS-stripping attack). Under enforce, senders defer the mail.", "enable STARTTLS; if the server offers it, something on the path strips it"),
    _R.VALIDATION_FAILURE: Rule(_E, "The TLS handshake with the MX host failed for a reason other than the certificate (protocol version, ciphers, or the connection dropped).", "allow TLS 1.2 or newer with current ciphers"),
    _C.MX_UNREACHABLE: Rule(_E, "The MX address did not accept an SMTP session from here (refused, timed out, or no greeting).", "make the MX host accept connections on port 25"),
    _C.OUTBOUND_PORT_25_BLOCKED: Rule(_W, "No MX address of any domain accepted a connection from where this check runs: outbound port 25 is probably blocked here (common on home and cloud networks), so the SMTP results say nothing about the domains.", "run the check from a host that may connect to port 25"),
    _C.MAX_AGE_SHORT: Rule(_W, "A max_age under a day in enforce mode means a short outage of the policy host lets the policy lapse; RFC 8461 recommends weeks."),
    _C.MAX_AGE_LONG_TESTING: Rule(_W, "A long max_age while testing means a broken policy published now stays cached by senders that long; the seed article advises one day until the reports are clean."),
    _C.MODE_NONE: Rule(_W, "Mode none withdraws MTA-STS (RFC 8461 section 8.3): keep serving it with a new id for at least the previous max_age so every cached enforce policy is replaced, then remove the _mta-sts record and the policy host."),
    _C.TLSRPT_MISSING: Rule(_W, "No _smtp._tls record: senders have nowhere to report TLS failures, so a problem in testing or enforce goes unnoticed.", "publish TXT _smtp._tls.<domain> \"v=TLSRPTv1; rua=mailto:...\""),
    _C.TLSRPT_INVALID: Rule(_W, "Senders ignore an invalid TLS-RPT record and send no reports (RFC 8460 section 3)."),
    _C.ID_NOT_TIMESTAMP: Rule(_I, "The id can be any 1-32 letters and digits, but a UTC timestamp makes it obvious when the policy last changed."),
    _C.MX_CNAME: Rule(_I, "The MX name is an alias (CNAME). The certificate must still be valid for the MX name the policy lists, not only for the alias target."),
    _C.DANE_TLSA: Rule(_I, "The MX host publishes TLSA records. DANE takes precedence over MTA-STS where DNSSEC validates (RFC 8461 section 2)."),
    _C.MX_TOO_MANY: Rule(_W, "The domain lists more MX hosts than the checker probes (16 by default, --max-mx): a zone can list thousands, so the least preferred ones were not checked."),
    _C.MX_ADDRESSES_TOO_MANY: Rule(_W, "The MX host has more addresses than the checker probes (8 by default, --max-addresses); the rest were not probed."),
    _C.CONFIG_DRIFT: Rule(_W, "What DNS or the policy host serves differs from mtasts.toml: a change was configured but not published (or published by hand). Senders apply what is served, not what is configured.", "publish what mtasts.toml says (mtasts records, or --publish SERVER)"),
    _C.CHECK_FAILED: Rule(_E, "The checker itself failed on this domain (an mtasts bug, or input it did not expect); the other domains of the run were still checked.", "please report this as a bug in mtasts, with the domain"),
    _C.MX_NONE: Rule(_W, "The domain has no MX record; senders fall back to its address record (RFC 5321 section 5.1), which MTA-STS cannot describe well."),
}  # fmt: skip

# For `check --explain` and the JSON's "explanation": code text -> words.
EXPLANATIONS: dict[str, str] = {str(code): rule.explanation for code, rule in RULES.items()}
# RFC 8460 §4.3.2.1's DANE result types: senders report them, the checker has no probe for
# them (it reports DANE overlap as dane-tlsa), but a report that names one must be explainable.
EXPLANATIONS.update(
    {
        "tlsa-invalid": "A sender found the MX host's TLSA records unusable or not matching the"
        " certificate it was shown (RFC 8460 §4.3.2.1, RFC 7672 §2.2): fix or remove the TLSA"
        " records before rotating certificates, and publish the next key's TLSA first.",
        "dnssec-invalid": "A sender could not validate the DNSSEC chain of the MX host's TLSA"
        " records (RFC 8460 §4.3.2.1): the zone's signatures or its DS record at the parent are"
        " broken or expired, so DANE senders treat the records as bogus.",
        "dane-required": "A sender was configured to require DANE for this domain but found no"
        " usable TLSA records (RFC 8460 §4.3.2.1): publish signed TLSA records for every MX host,"
        " or ask the sender to drop its requirement.",
    }
)


def finding_code(text: str) -> FindingCode:
    """The code named ``text``; ValueError names the unknown code."""
    for kind in (ResultType, CheckCode):
        try:
            return kind(text)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a finding code")


@dataclass(frozen=True, slots=True)
class Finding:
    code: FindingCode
    severity: Severity
    subject: str  # what it is about: record, policy, an MX host, an address
    message: str  # one line, naming the concrete thing
    fix: str | None = None

    @property
    def explanation(self) -> str:
        return RULES[self.code].explanation

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": str(self.code),
            "severity": str(self.severity),
            "subject": self.subject,
            "message": self.message,
            "explanation": self.explanation,
            "fix": self.fix,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Finding:
        return cls(
            finding_code(raw["code"]),
            Severity(raw["severity"]),
            raw["subject"],
            raw["message"],
            raw.get("fix"),
        )
