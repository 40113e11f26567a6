"""Simulated TLS-RPT reports from the lab's senders, following each lab domain's faults.

Deterministic (seeded), for the demo and the benchmarks: each simulated sender
reports one day per report, with sessions that fail the way the domain's
scenario says they would (an expired certificate fails every session to that
MX, a bad load-balancer backend one session in three, a broken policy host
makes the sender report a policy fetch failure).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dkim import LabSigners

# (organization-name, the domain that signs its mail, share of the traffic)
SENDERS = (
    ("google.com", "google.com", 0.6),
    ("Microsoft Corporation", "microsoft.com", 0.3),
    ("mail.example-isp.net", "mail.example-isp.net", 0.1),
)
SENDER_DOMAINS = tuple(domain for _, domain, _ in SENDERS)
_POLICY_FAULTS = {"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"}
_MX_FAULTS = {
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "starttls-not-supported",
}


def _report(
    sender: str, domain: dict[str, Any], day: dt.date, rng: random.Random
) -> dict[str, Any]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    share = next(s for name, _, s in SENDERS if name == sender)
    sessions = max(1, int(rng.randint(200, 2000) * share))
    codes = set(domain["expect"])
    failures = []
    mx_faults = sorted(codes & _MX_FAULTS)
    faulty = [a for a in domain["mx"] if a["fault"] != "none"]
    if mx_faults and faulty:
        # One bad address among n fails about 1/n of the sessions.
        rate = len(faulty) / max(1, len(domain["mx"]))
        failed = int(sessions * rate)
        failures = [
            {
                "result-type": mx_faults[0],
                "receiving-mx-hostname": f"mx.{domain['name']}",
                "receiving-ip": faulty[0]["address"],
                "sending-mta-ip": "192.0.2.25",
                "failed-session-count": failed,
            }
        ]
    elif codes & _POLICY_FAULTS:
        failures = [
            {
                "result-type": sorted(codes & _POLICY_FAULTS)[0],
                "failed-session-count": sessions // 10,
            }
        ]
    failed_total = sum(f["failed-session-count"] for f in failures)
    return {
        "organization-name": sender,
        "date-range": {
            "start-datetime": start.isoformat().replace("+00:00", "Z"),
            "end-datetime": (start + dt.timedelta(days=1, seconds=-1))
            .isoformat()
            .replace("+00:00", "Z"),
        },
        "contact-info": f"smtp-tls-reporting@{sender.split()[0].lower()}",
        "report-id": f"{day:%Y-%m-%d}_{domain['name']}_{sender.split()[0].lower()}",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-domain": domain["name"],
                    "mx-host": [f"mx.{domain['name']}"],
                    "policy-string": [
                        "version: STSv1",
                        "mode: testing",
                        f"mx: mx.{domain['name']}",
                        "max_age: 86400",
                    ],
                },
                "summary": {
                    "total-successful-session-count": sessions - failed_total,
                    "total-failure-session-count": failed_total,
                },
                "failure-details": failures,
            }
        ],
    }


def simulate(
    domains: list[dict[str, Any]], days: int = 21, today: dt.date | None = None, seed: int = 8460
) -> list[bytes]:
    """Gzipped report files for every domain that publishes MTA-STS (``domains`` as in lab.json)."""
    return [report for _, _, report in _simulated(domains, days, today, seed)]


def _simulated(
    domains: list[dict[str, Any]], days: int, today: dt.date | None, seed: int
) -> list[tuple[str, str, bytes]]:
    """(signing domain, policy domain, gzipped report) per simulated report."""
    rng = random.Random(seed)
    last = today or dt.datetime.now(dt.UTC).date()
    out = []
    for domain in domains:
        if "sts-not-published" in domain["expect"] or "mode-none" in domain["expect"]:
            continue
        for back in range(days, 0, -1):
            for sender, signer, _ in SENDERS:
                doc = _report(sender, domain, last - dt.timedelta(days=back), rng)
                out.append((signer, domain["name"], gzip.compress(json.dumps(doc).encode())))
    return out


def simulate_mail(
    domains: list[dict[str, Any]],
    signers: LabSigners,
    days: int = 21,
    today: dt.date | None = None,
    seed: int = 8460,
) -> list[bytes]:
    """The same reports as RFC 8460 §5.3 mail, DKIM-signed by each sender's lab key (§3)."""
    return [
        signers.sign(report_mail(report, submitter=signer, domain=domain), signer)
        for signer, domain, report in _simulated(domains, days, today, seed)
    ]


def report_mail(
    report_gz: bytes,
    submitter: str = "mail.example",
    domain: str = "company-y.example",
    filename: str | None = None,
    media: str = "application/tlsrpt+gzip",
) -> bytes:
    """A report mail as RFC 8460 §5.3 describes it: multipart/report, base64 gzip attachment."""
    import base64

    payload = base64.encodebytes(report_gz).decode().replace("\n", "\r\n")
    name = filename or f"{submitter}!{domain}!1459468800!1459555199.json.gz"
    boundary = "tlsrpt-boundary-42"
    return (
        f"From: noreply-smtp-tls-reporting@{submitter}\r\nTo: tlsrpt@{domain}\r\n"
        f"Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <x>\r\n"
        f"TLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {submitter}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type="tlsrpt"; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate TLS report from {submitter}\r\n"
        f"--{boundary}\r\nContent-Type: {media}\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n{payload}\r\n--{boundary}--\r\n'
    ).encode()
