"""Throughput of the pure RFC parsers (policies, records, reports) on this machine.

The peers named in the issues (postfix-mta-sts-resolver, parsedmarc, checkdmarc)
are compared where their whole job is measured: the resolver, report ingest and
check benchmarks. This one gives the floor those layers stand on.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from importlib import resources

import dns.message
import dns.rrset

from mtasts import sts, tlsrpt
from mtasts.net import dnswire


def rate(label: str, func: Callable[[], object], seconds: float = 1.0) -> None:
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            func()
        count += 100
    print(f"{label:<40} {count / elapsed:>12,.0f} /s")


def main() -> None:
    examples = resources.files("mtasts") / "examples"
    policy = (examples / "mta-sts.txt").read_bytes()
    report = (examples / "report.json").read_bytes()
    report_gz = gzip.compress(report)
    big = json.loads(report)
    big["policies"] = big["policies"] * 50
    big_report = json.dumps(big).encode()
    rate("parse_policy (5 lines)", lambda: sts.parse_policy(policy))
    rate(
        "select_record (3 TXT records)",
        lambda: sts.select_record(["v=spf1 -all", "x", "v=STSv1; id=20260521T101500;"]),
    )
    rate("tlsrpt parse_record", lambda: tlsrpt.parse_record("v=TLSRPTv1; rua=mailto:a@example.com"))
    rate("parse_report (json, 1 policy)", lambda: tlsrpt.parse_report(report))
    rate("parse_report (gzip, 1 policy)", lambda: tlsrpt.parse_report(report_gz))
    rate("parse_report (json, 50 policies)", lambda: tlsrpt.parse_report(big_report))
    # The DNS codec against dnspython, on a two-MX answer as a recursive server sends it.
    query = dns.message.make_query("example.com", "MX")
    answer = dns.message.make_response(query)
    answer.answer.append(
        dns.rrset.from_text(
            "example.com.", 300, "IN", "MX", "10 mx1.example.com.", "20 mx2.example.com."
        )
    )
    wire = answer.to_wire()
    rate("dnswire decode_response (2 MX)", lambda: dnswire.decode_response(wire))
    rate("dnspython from_wire (2 MX)", lambda: dns.message.from_wire(wire))


if __name__ == "__main__":
    main()
