"""The judge, table-tested with facts built by hand: no lab, no sockets, no clock.

One row per rule. The last test proves every finding code of the vocabulary is
produced by at least one row, so a code that nothing can emit is caught here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mtasts.check.facts import AddressFacts, DomainFacts, FactsError, MxFacts, TxtFacts
from mtasts.check.findings import RULES, CheckCode, CheckVerdict, Severity
from mtasts.check.judge import Expected, JudgeContext, judge
from mtasts.check.report import to_json
from mtasts.net.https import PolicyFetch
from mtasts.net.smtp import SmtpProbe
from mtasts.net.tls import Leaf, Trust
from mtasts.sts import Mode, MxPattern, Policy, parse_policy

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
DOMAIN = "example.com"
MX = "mx.example.com"
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 604800\r\n"
URL = f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt"


def leaf(*names: str, days: int = 90) -> Leaf:
    return Leaf(
        names or (MX,),
        None,
        "CN=Lab CA",
        NOW - dt.timedelta(days=10),
        NOW + dt.timedelta(days=days),
    )


def probe(address: str = "192.0.2.1", **changes: Any) -> SmtpProbe:
    healthy = SmtpProbe(MX, address, 25, connected=True, banner="mx ESMTP", starttls=True,
                        tls_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", trust=Trust(True), leaf=leaf())  # fmt: skip
    return dataclasses.replace(healthy, **changes)


def fetch(address: str = "192.0.2.10", **changes: Any) -> PolicyFetch:
    healthy = PolicyFetch(URL, address, 200, "text/plain", POLICY.encode(), None, Trust(True),
                          leaf(f"mta-sts.{DOMAIN}"))  # fmt: skip
    return dataclasses.replace(healthy, **changes)


def mx(*probes: SmtpProbe, **changes: Any) -> MxFacts:
    addresses = tuple(AddressFacts(p.address, (p,)) for p in probes or (probe(),))
    return dataclasses.replace(MxFacts(MX, 10, addresses=addresses), **changes)


def healthy(**changes: Any) -> DomainFacts:
    facts = DomainFacts(
        DOMAIN, NOW,
        sts_txt=TxtFacts((("v=STSv1; id=20261206T120000;",),)),
        tlsrpt_txt=TxtFacts(((f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}",),)),
        mx_listed=1, mx=(mx(),), policy=(fetch(),),
    )  # fmt: skip
    return dataclasses.replace(facts, **changes)


def with_policy(text: str) -> DomainFacts:
    return healthy(policy=(fetch(body=text.encode()),))


TESTING = POLICY.replace("enforce", "testing").replace("604800", "86400")
Row = tuple[str, Callable[[], DomainFacts], JudgeContext, set[str]]
ROWS: list[Row] = [
    ("healthy", healthy, JudgeContext(), set()),
    ("nxdomain", lambda: healthy(domain_exists=False, mx=(), mx_listed=0, policy=()), JudgeContext(),
     {"domain-not-found"}),
    ("gather-failed", lambda: healthy(gather_error="RuntimeError: boom"), JudgeContext(), {"check-failed"}),
    ("no-record", lambda: healthy(sts_txt=TxtFacts((("v=spf1 -all",),)), policy=()), JudgeContext(),
     {"sts-not-published"}),
    ("two-records", lambda: healthy(sts_txt=TxtFacts((("v=STSv1; id=1;",), ("v=STSv1; id=2;",)))),
     JudgeContext(), {"sts-record-multiple"}),
    ("bad-record", lambda: healthy(sts_txt=TxtFacts((("v=STSv1; id=2026-12-06;",),))), JudgeContext(),
     {"sts-record-invalid"}),
    ("id-not-timestamp", lambda: healthy(sts_txt=TxtFacts((("v=STSv1; id=abc;",),))), JudgeContext(),
     {"id-not-timestamp"}),
    ("txt-servfail", lambda: healthy(sts_txt=TxtFacts(error="SERVFAIL"), policy=()), JudgeContext(),
     {"dns-error"}),
    ("mx-servfail", lambda: healthy(mx=(), mx_listed=0, mx_error="timeout"), JudgeContext(),
     {"dns-error"}),
    ("no-mx", lambda: healthy(mx=(), mx_listed=0), JudgeContext(), {"mx-none"}),
    ("policy-404", lambda: healthy(policy=(fetch(status=404, body=None),)), JudgeContext(),
     {"sts-policy-fetch-error"}),
    ("policy-redirect", lambda: healthy(policy=(fetch(status=301, body=None, location="https://www/"),)),
     JudgeContext(), {"sts-policy-fetch-error"}),
    ("policy-timeout", lambda: healthy(policy=(fetch(status=None, body=None, error_kind="timeout", error="slow"),)),
     JudgeContext(), {"sts-policy-fetch-error"}),
    ("policy-html", lambda: healthy(policy=(fetch(content_type="text/html"),)), JudgeContext(),
     {"sts-policy-invalid"}),
    ("policy-grammar", lambda: with_policy("mode: enforce\r\n"), JudgeContext(), {"sts-policy-invalid"}),
    ("policy-final-empty-line", lambda: with_policy(POLICY + "\r\n"), JudgeContext(), {"sts-policy-invalid"}),
    ("policy-chain", lambda: healthy(policy=(fetch(status=None, body=None, error_kind="webpki", trust=Trust(False, 18, "self-signed"), error="certificate: self-signed"),)),
     JudgeContext(), {"sts-webpki-invalid"}),
    ("policy-cert-name", lambda: healthy(policy=(fetch(leaf=leaf("www.example.com")),)), JudgeContext(),
     {"sts-webpki-invalid"}),
    ("policy-one-bad-backend", lambda: healthy(policy=(fetch(), fetch("192.0.2.11", status=404, body=None))),
     JudgeContext(), {"sts-policy-fetch-error", "policy-inconsistent"}),
    ("policy-backends-differ", lambda: healthy(policy=(fetch(), fetch("192.0.2.11", body=TESTING.encode()))),
     JudgeContext(), {"policy-inconsistent"}),
    ("mx-not-in-policy", lambda: healthy(mx=(mx(), dataclasses.replace(mx(), host="backup.example.com"))),
     JudgeContext(), {"mx-not-in-policy", "certificate-host-mismatch"}),
    ("pattern-unused", lambda: with_policy(POLICY.replace("max_age", "mx: old.example.com\r\nmax_age")),
     JudgeContext(), {"mx-pattern-unused"}),
    ("starttls-stripped", lambda: healthy(mx=(mx(probe(starttls=False, trust=None, leaf=None, tls_version=None)),)),
     JudgeContext(), {"starttls-not-supported"}),
    ("cert-host-mismatch", lambda: healthy(mx=(mx(probe(leaf=leaf("other.example.net"))),)), JudgeContext(),
     {"certificate-host-mismatch"}),
    ("cert-expired", lambda: healthy(mx=(mx(probe(trust=Trust(False, 10, "certificate has expired"))),)),
     JudgeContext(), {"certificate-expired"}),
    ("cert-untrusted", lambda: healthy(mx=(mx(probe(trust=Trust(False, 19, "self-signed certificate in chain"))),)),
     JudgeContext(), {"certificate-not-trusted"}),
    ("handshake-failed", lambda: healthy(mx=(mx(probe(trust=None, leaf=None, error_kind="handshake", error="no shared cipher")),)),
     JudgeContext(), {"validation-failure"}),
    ("cert-expiring", lambda: healthy(mx=(mx(probe(leaf=leaf(days=5))),)), JudgeContext(), {"certificate-expiring"}),
    ("mx-refused", lambda: healthy(mx=(mx(probe(connected=False, starttls=None, trust=None, leaf=None, error_kind="connect", error="refused")),)),
     JudgeContext(), {"mx-unreachable"}),
    ("mx-no-address", lambda: healthy(mx=(MxFacts(MX, 10),)), JudgeContext(), {"mx-unreachable"}),
    ("port-25-blocked", lambda: healthy(mx=(mx(probe(connected=False, starttls=None, trust=None, leaf=None, error_kind="connect", error="refused")),)),
     JudgeContext(smtp_reachable=False), {"outbound-port-25-blocked"}),
    ("max-age-short", lambda: with_policy(POLICY.replace("604800", "3600")), JudgeContext(), {"max-age-short"}),
    ("max-age-long-testing", lambda: with_policy(TESTING.replace("86400", "2592000")), JudgeContext(),
     {"max-age-long-testing"}),
    ("mode-none", lambda: with_policy("version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"), JudgeContext(),
     {"mode-none"}),
    ("tlsrpt-missing", lambda: healthy(tlsrpt_txt=TxtFacts()), JudgeContext(), {"tlsrpt-missing"}),
    ("tlsrpt-invalid", lambda: healthy(tlsrpt_txt=TxtFacts((("v=TLSRPTv1; rua=ftp://x",),))), JudgeContext(),
     {"tlsrpt-invalid"}),
    ("mx-cname", lambda: healthy(mx=(mx(cname="server1.provider.example"),)), JudgeContext(), {"mx-cname"}),
    ("dane-tlsa", lambda: healthy(mx=(mx(tlsa=True, tlsa_validated=True),)), JudgeContext(), {"dane-tlsa"}),
    ("mx-too-many", lambda: healthy(mx_listed=20, mx_skipped=19), JudgeContext(), {"mx-too-many"}),
    ("addresses-too-many", lambda: healthy(mx=(mx(addresses_skipped=3),)), JudgeContext(), {"mx-addresses-too-many"}),
    ("config-drift", healthy, JudgeContext(expected=Expected(parse_policy(TESTING), "20261206T120000")),
     {"config-drift"}),
    ("config-unpublished", healthy, JudgeContext(expected=Expected(parse_policy(POLICY), None)), {"config-drift"}),
    ("config-in-sync", healthy, JudgeContext(expected=Expected(parse_policy(POLICY), "20261206T120000")), set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "context", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_each_rule(
    make: Callable[[], DomainFacts], context: JudgeContext, expected: set[str]
) -> None:
    check = judge(make(), context)
    assert {str(f.code) for f in check.findings} == expected


def test_every_code_has_a_rule_and_a_row_that_produces_it() -> None:
    produced = {
        str(f.code) for _, make, context, _ in ROWS for f in judge(make(), context).findings
    }
    assert produced == {str(code) for code in RULES}
    assert all(rule.explanation for rule in RULES.values())


def test_the_schema_lists_exactly_the_codes() -> None:
    schema = json.loads((Path(__file__).parent.parent / "docs" / "check.schema.json").read_text())
    assert set(schema["$defs"]["finding"]["properties"]["code"]["enum"]) == {str(c) for c in RULES}


def test_failures_are_errors_under_a_policy_and_warnings_without_one() -> None:
    broken = (mx(probe(leaf=leaf("other.example.net"))),)
    enforce = judge(healthy(mx=broken))
    testing = judge(healthy(mx=broken, policy=(fetch(body=TESTING.encode()),)))
    without = judge(healthy(mx=broken, sts_txt=TxtFacts(), policy=()))
    assert [f.severity for f in enforce.findings] == [Severity.ERROR]
    assert [f.severity for f in testing.findings] == [Severity.ERROR]
    assert {f.code: f.severity for f in without.findings}[
        "certificate-host-mismatch"
    ] is Severity.WARNING
    assert enforce.mx[0].action == "defer: enforce forbids delivery"
    assert testing.mx[0].action == "deliver despite the failure (testing), and report it"


def test_nxdomain_is_said_once_instead_of_three_missing_records() -> None:
    check = judge(
        healthy(
            domain_exists=False,
            mx=(),
            mx_listed=0,
            policy=(),
            sts_txt=TxtFacts(),
            tlsrpt_txt=TxtFacts(),
        )
    )
    assert [(f.code, f.severity) for f in check.findings] == [
        (CheckCode.DOMAIN_NOT_FOUND, Severity.ERROR)
    ]
    assert check.verdict is CheckVerdict.ERROR


def test_a_blocked_port_25_makes_the_verdict_unknown_not_ok() -> None:
    refused = mx(probe(connected=False, starttls=None, trust=None, leaf=None, error_kind="connect"))
    check = judge(healthy(mx=(refused,)), JudgeContext(smtp_reachable=False))
    assert check.verdict is CheckVerdict.UNKNOWN
    assert check.mx[0].action == "unknown: port 25 unreachable from here"
    assert check.mx[0].addresses[0].result is None
    # An error that needs no SMTP still wins.
    broken = judge(
        healthy(mx=(refused,), policy=(fetch(status=404, body=None),)),
        JudgeContext(smtp_reachable=False),
    )
    assert broken.verdict is CheckVerdict.ERROR


def test_a_bad_backend_is_named_by_address() -> None:
    check = judge(healthy(policy=(fetch(), fetch("192.0.2.11", status=404, body=None))))
    fetch_error = next(f for f in check.findings if f.code == "sts-policy-fetch-error")
    assert fetch_error.subject == f"{URL} [192.0.2.11]"
    inconsistent = next(f for f in check.findings if f.code == "policy-inconsistent")
    assert "192.0.2.10: version: STSv1" in inconsistent.message
    assert "192.0.2.11: sts-policy-fetch-error" in inconsistent.message
    assert (
        check.policy is not None
    )  # what the healthy backend serves is still judged against the MX
    document = to_json(check)
    assert [a["result"] for a in document["policy"]["addresses"]] == [
        None,
        "sts-policy-fetch-error",
    ]


def test_the_judge_uses_the_observation_time_not_the_clock() -> None:
    facts = healthy(mx=(mx(probe(leaf=leaf(days=30))),))
    assert judge(facts).findings == ()
    later = judge(facts, JudgeContext(now=NOW + dt.timedelta(days=20)))
    assert [f.code for f in later.findings] == [CheckCode.CERTIFICATE_EXPIRING]


@pytest.mark.parametrize("name", [r[0] for r in ROWS])
def test_facts_survive_json_and_judge_the_same(name: str) -> None:
    _, make, context, _ = next(r for r in ROWS if r[0] == name)
    facts = make()
    again = DomainFacts.from_dict(json.loads(json.dumps(facts.to_dict())))
    assert again == facts
    assert judge(again, context).findings == judge(facts, context).findings


def test_a_non_utf8_policy_body_survives_as_base64() -> None:
    facts = healthy(policy=(fetch(body=b"\xff\xfe" + POLICY.encode()),))
    raw = facts.to_dict()
    assert "base64" in raw["policy"][0]["body"]
    assert DomainFacts.from_dict(json.loads(json.dumps(raw))) == facts


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"version": 99, "domain": "x"},
        {"version": 1, "domain": "x", "observed_at": "yesterday"},
        [],
        "text",
    ],
)
def test_a_broken_facts_document_is_one_typed_error(raw: Any) -> None:
    with pytest.raises(FactsError):
        DomainFacts.from_dict(raw)


def test_expected_policy_equality_ignores_nothing_senders_see() -> None:
    configured = Policy(Mode.ENFORCE, 604800, (MxPattern(MX),))
    assert (
        judge(healthy(), JudgeContext(expected=Expected(configured, "20261206T120000"))).findings
        == ()
    )


def test_the_enforce_gate_refuses_a_policy_host_with_a_stale_backend() -> None:
    from mtasts.deploy.rollout import Readiness, enforce_gate
    from mtasts.reports.verdict import Verdict

    ready = Readiness(Verdict.READY, "clean")
    assert enforce_gate(judge(healthy()), ready).open
    stale = judge(healthy(policy=(fetch(), fetch("192.0.2.11", body=TESTING.encode()))))
    gate = enforce_gate(stale, ready)
    assert not gate.open
    assert any(b.startswith("policy-inconsistent: ") for b in gate.blockers)


def test_facts_documents_are_read_in_every_form_and_a_bad_one_is_named() -> None:
    from mtasts.check.facts import read_documents

    one = healthy().to_dict()
    wrapped = to_json(judge(healthy()), with_facts=True)
    as_array = json.dumps([one, wrapped])
    as_lines = "\n".join([json.dumps(one), "{broken", json.dumps(wrapped), "[1]"])
    assert read_documents(as_array, "a.json") == ([healthy(), healthy()], [])
    facts, problems = read_documents(as_lines, "f.jsonl")
    assert facts == [healthy(), healthy()]
    assert [p.split(": ")[0] for p in problems] == ["f.jsonl:2", "f.jsonl:4"]
    assert problems[0].startswith("f.jsonl:2: not JSON")
    assert problems[1] == "f.jsonl:4: not a JSON object"
