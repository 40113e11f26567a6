"""Findings: what the checker concludes, in one vocabulary shared with TLS-RPT.

Where a TLS-RPT result type (RFC 8460 §4.3) describes a failure, the code is
that result type's exact name, so a failure seen in a report leads straight to
the check that explains it. Each code has one plain-words explanation here;
the message and the fix, which name the concrete host or line, are written
where the finding is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


EXPLANATIONS: dict[str, str] = {
    "sts-not-published": "Without an _mta-sts record, STARTTLS to this domain is opportunistic: an attacker on the path can delete the STARTTLS offer and senders fall back to plaintext without telling anyone.",
    "sts-record-multiple": "RFC 8461 section 3.1: when more than one TXT record begins with v=STSv1, senders must assume the domain has no policy at all.",
    "sts-record-invalid": "Senders ignore a syntactically invalid _mta-sts record, so the policy is never applied (RFC 8461 section 3.1).",
    "dns-error": "A DNS lookup failed (SERVFAIL or timeout). Senders cannot tell whether a policy exists; a cached policy keeps applying, a new sender sees none.",
    "sts-policy-fetch-error": "Senders could not fetch the policy file. RFC 8461 section 3.3 requires HTTPS, status 200 and forbids following redirects; senders report this as sts-policy-fetch-error and apply no policy (or a cached one).",
    "sts-policy-invalid": "The policy was fetched but senders reject it: it must be text/plain and follow the grammar of RFC 8461 section 3.2.",
    "sts-webpki-invalid": "The HTTPS certificate of the policy host does not verify for mta-sts.<domain>, so the policy cannot be trusted (RFC 8461 section 3.3).",
    "mx-not-in-policy": "An MX host name is not matched by any mx line of the policy. Under enforce, senders refuse to deliver to that MX (RFC 8461 section 4.1).",
    "mx-pattern-unused": "A policy mx pattern matches none of the domain's MX hosts: probably a stale entry from a decommissioned server.",
    "certificate-host-mismatch": "The MX host's certificate is not valid for the MX name the policy lists. The mx values are the names the certificate must prove, not the server's own name: a CNAME to a provider host whose certificate names only the provider fails this (RFC 8461 section 4.2).",
    "certificate-expired": "The MX host presents an expired certificate; MTA-STS senders treat the connection as failed.",
    "certificate-not-trusted": "The certificate chain does not lead to a trusted CA (self-signed, private CA, or a missing intermediate).",
    "certificate-expiring": "The certificate expires soon; renew it before senders start failing.",
    "starttls-not-supported": "The MX host did not offer STARTTLS. Either the server does not support it or something on the path removed the offer (the STARTTLS-stripping attack). Under enforce, senders defer the mail.",
    "validation-failure": "The TLS handshake with the MX host failed for a reason other than the certificate (protocol version, ciphers, or the connection dropped).",
    "mx-unreachable": "The MX address did not accept an SMTP session from here (refused, timed out, or no greeting).",
    "outbound-port-25-blocked": "No MX address of any domain accepted a connection from where this check runs: outbound port 25 is probably blocked here (common on home and cloud networks), so the SMTP results say nothing about the domains.",
    "max-age-short": "A max_age under a day in enforce mode means a short outage of the policy host lets the policy lapse; RFC 8461 recommends weeks.",
    "max-age-long-testing": "A long max_age while testing means a broken policy published now stays cached by senders that long; the seed article advises one day until the reports are clean.",
    "mode-none": "Mode none withdraws MTA-STS (RFC 8461 section 8.3): keep serving it with a new id for at least the previous max_age so every cached enforce policy is replaced, then remove the _mta-sts record and the policy host.",
    "tlsrpt-missing": "No _smtp._tls record: senders have nowhere to report TLS failures, so a problem in testing or enforce goes unnoticed.",
    "tlsrpt-invalid": "Senders ignore an invalid TLS-RPT record and send no reports (RFC 8460 section 3).",
    "id-not-timestamp": "The id can be any 1-32 letters and digits, but a UTC timestamp makes it obvious when the policy last changed.",
    "mx-cname": "The MX name is an alias (CNAME). The certificate must still be valid for the MX name the policy lists, not only for the alias target.",
    "dane-tlsa": "The MX host publishes TLSA records. DANE takes precedence over MTA-STS where DNSSEC validates (RFC 8461 section 2).",
    "mx-too-many": "The domain lists more MX hosts than the checker probes (16 by default, --max-mx): a zone can list thousands, so the least preferred ones were not checked.",
    "mx-addresses-too-many": "The MX host has more addresses than the checker probes (8 by default, --max-addresses); the rest were not probed.",
    "config-drift": "What DNS or the policy host serves differs from mtasts.toml: a change was configured but not published (or published by hand). Senders apply what is served, not what is configured.",
    "check-failed": "The checker itself failed on this domain (an mtasts bug, or input it did not expect); the other domains of the run were still checked.",
    "mx-none": "The domain has no MX record; senders fall back to its address record (RFC 5321 section 5.1), which MTA-STS cannot describe well.",
}


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    subject: str  # what it is about: record, policy, an MX host, an address
    message: str  # one line, naming the concrete thing
    fix: str | None = None

    @property
    def explanation(self) -> str:
        return EXPLANATIONS.get(self.code, "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": str(self.severity),
            "subject": self.subject,
            "message": self.message,
            "explanation": self.explanation,
            "fix": self.fix,
        }
