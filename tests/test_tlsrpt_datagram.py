"""libtlsrpt datagrams (the documented format), the reports built from them, and their mail."""

from __future__ import annotations

import contextlib
import email
import gzip
import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtasts.tlsrpt import parse_report
from mtasts.tlsrpt.build import (
    PolicyTally,
    build_report,
    report_filename,
    report_gzip,
    report_id,
    report_mail,
)
from mtasts.tlsrpt.datagram import MAX_DATAGRAM, DatagramError, parse_datagram
from mtasts.tlsrpt.mail import extract_reports
from mtasts.tlsrpt.model import FailureDetail, PolicyType, ReportPolicy

RECORD = "v=TLSRPTv1;rua=mailto:tlsrpt@bad.example"


def datagram(**policy: object) -> bytes:
    entry = {"policy-type": 2, "policy-domain": "bad.example", "t": 0, "f": 0, **policy}
    return json.dumps({"dpv": "1", "d": "bad.example", "pr": RECORD, "policies": [entry]}).encode()


CODES = {
    201: "starttls-not-supported",
    202: "certificate-host-mismatch",
    203: "certificate-not-trusted",
    204: "certificate-expired",
    205: "validation-failure",
    301: "sts-policy-fetch-error",
    302: "sts-policy-invalid",
    303: "sts-webpki-invalid",
    304: "tlsa-invalid",
    305: "dnssec-invalid",
    306: "dane-required",
}


@pytest.mark.parametrize(("code", "name"), sorted(CODES.items()))
def test_every_failure_code_becomes_its_result_type(code: int, name: str) -> None:
    detail = {
        "c": code,
        "s": "192.0.2.10",
        "n": "mx.bad.example",
        "h": "mx.bad.example",
        "r": "198.51.100.7",
        "a": "https://bad.example/why",
        "f": "hostname mismatch",
    }
    session = parse_datagram(datagram(**{"failure-details": [detail], "t": 1, "f": 1}))
    (entry,) = session.policies
    assert entry.failed
    (found,) = entry.details
    assert found.result_type == name
    assert (found.sending_mta_ip, found.receiving_mx_hostname, found.receiving_mx_helo) == (
        "192.0.2.10",
        "mx.bad.example",
        "mx.bad.example",
    )
    assert (found.receiving_ip, found.additional_information, found.failure_reason_code) == (
        "198.51.100.7",
        "https://bad.example/why",
        "hostname mismatch",
    )


@pytest.mark.parametrize(
    ("code", "kind"), [(1, PolicyType.TLSA), (2, PolicyType.STS), (9, PolicyType.NO_POLICY_FOUND)]
)
def test_every_policy_type(code: int, kind: PolicyType) -> None:
    session = parse_datagram(datagram(**{"policy-type": code}))
    assert session.policies[0].policy.policy_type is kind
    assert session.record == RECORD


def test_no_policy_found_without_policy_domain_takes_the_recipient_domain() -> None:
    raw = {"dpv": "1", "d": "Plain.Example.", "policies": [{"policy-type": 9, "t": 0, "f": 0}]}
    session = parse_datagram(json.dumps(raw).encode())
    assert session.policies[0].policy.policy_domain == "plain.example"
    assert session.record == ""


def test_policy_strings_mx_patterns_and_escapes_are_kept() -> None:
    strings = ["version: STSv1", 'mode: "testing"\\', "mx: *.mail.bad.example", "caf\u00e9\u0001"]
    session = parse_datagram(
        datagram(**{"policy-string": strings, "mx-host": ["*.mail.bad.example"]})
    )
    policy = session.policies[0].policy
    assert policy.policy_string == tuple(strings)
    assert policy.mx_host == ("*.mail.bad.example",)


def test_the_unfinished_marker_counts_as_a_validation_failure() -> None:
    session = parse_datagram(datagram(**{"failure-details": [{"c": 901}], "t": 1, "f": 1}))
    detail = session.policies[0].details[0]
    assert (detail.result_type, detail.failure_reason_code) == (
        "validation-failure",
        "policy-not-finished",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"dpv":"1","d":"caf\xe9.example","policies":[]}', "not UTF-8"),
        (datagram()[:-7], "not JSON"),
        (b"x" * (MAX_DATAGRAM + 1), "limit"),
        (b"[]", "not a JSON object"),
        (b'{"dpv":"2","d":"a.example","policies":[{"policy-type":2,"f":0}]}', "dpv"),
        (b'{"dpv":"1","policies":[{"policy-type":2,"f":0}]}', "d: is missing"),
        (b'{"dpv":"1","d":"a.example","policies":[]}', "policies"),
        (datagram(**{"policy-type": 3}), "policies[0].policy-type"),
        (datagram(**{"f": 2}), "policies[0].f"),
        (datagram(**{"f": True}), "policies[0].f"),
        (datagram(**{"failure-details": [{"c": 999}]}), "failure-details[0].c"),
        (datagram(**{"failure-details": [{"c": 202, "n": 7}]}), "failure-details[0].n"),
        (datagram(**{"policy-string": "mode: enforce"}), "policy-string"),
    ],
)
def test_malformed_datagrams_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(DatagramError) as caught:
        parse_datagram(data)
    assert message in str(caught.value)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_session_or_a_datagram_error(data: bytes) -> None:
    with contextlib.suppress(DatagramError):
        parse_datagram(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "policy-type",
                "policy-domain",
                "policy-string",
                "mx-host",
                "failure-details",
                "t",
                "f",
            ]
        ),
        _json,
    )
)
def test_any_policy_object_gives_a_session_or_a_datagram_error(policy: dict[str, object]) -> None:
    raw = {"dpv": "1", "d": "a.example", "pr": RECORD, "policies": [policy]}
    with contextlib.suppress(DatagramError):
        parse_datagram(json.dumps(raw).encode())


DAY = date(2026, 12, 5)
STS = ReportPolicy(
    PolicyType.STS,
    "bad.example",
    ("version: STSv1", "mode: enforce", "mx: mx.bad.example", "max_age: 604800"),
    ("mx.bad.example",),
)
GOLDEN = {
    "organization-name": "Sender Example",
    "date-range": {
        "start-datetime": "2026-12-05T00:00:00Z",
        "end-datetime": "2026-12-05T23:59:59Z",
    },
    "contact-info": "mailto:postmaster@sender.example",
    "report-id": "2026-12-05T00:00:00Z_bad.example_9045ae8e0d@sender.example",
    "policies": [
        {
            "policy": {"policy-type": "no-policy-found", "policy-domain": "bad.example"},
            "summary": {"total-successful-session-count": 2, "total-failure-session-count": 0},
        },
        {
            "policy": {
                "policy-type": "sts",
                "policy-domain": "bad.example",
                "policy-string": list(STS.policy_string or ()),
                "mx-host": "mx.bad.example",
            },
            "summary": {"total-successful-session-count": 5, "total-failure-session-count": 3},
            "failure-details": [
                {
                    "result-type": "certificate-host-mismatch",
                    "receiving-mx-hostname": "mx.bad.example",
                    "receiving-ip": "192.0.2.7",
                    "failure-reason-code": "hostname mismatch",
                    "failed-session-count": 3,
                }
            ],
        },
    ],
}


def golden_report() -> tuple[object, str]:
    rid = report_id(DAY, "bad.example", RECORD, "sender.example")
    detail = FailureDetail(
        "certificate-host-mismatch",
        3,
        receiving_mx_hostname="mx.bad.example",
        receiving_ip="192.0.2.7",
        failure_reason_code="hostname mismatch",
    )
    report = build_report(
        DAY,
        organization="Sender Example",
        contact="mailto:postmaster@sender.example",
        report_id=rid,
        tallies=[
            PolicyTally(STS, 5, 3, (detail,)),
            PolicyTally(ReportPolicy(PolicyType.NO_POLICY_FOUND, "bad.example"), 2, 0),
        ],
    )
    return report, rid


def test_golden_report_json() -> None:
    report, rid = golden_report()
    assert rid == GOLDEN["report-id"]
    assert json.loads(report.to_json()) == GOLDEN  # type: ignore[attr-defined]
    assert parse_report(report_gzip(report)) == report  # type: ignore[arg-type]
    # Same sessions, same bytes: a retried report is byte-identical.
    assert report_gzip(report) == report_gzip(golden_report()[0])  # type: ignore[arg-type]


def test_golden_filename_and_mime_structure() -> None:
    report, rid = golden_report()
    name = report_filename(report, "sender.example", "bad.example")  # type: ignore[arg-type]
    assert name == "sender.example!bad.example!1796428800!1796515199!" + name.split("!")[4]
    assert name.endswith(".json.gz")
    assert len(name.split("!")) == 5
    raw = report_mail(
        report,  # type: ignore[arg-type]
        policy_domain="bad.example",
        submitter="sender.example",
        sender="noreply-tlsrpt@sender.example",
        recipients=["tlsrpt@bad.example"],
        date_header="Sun, 06 Dec 2026 01:00:00 +0000",
        message_id="<1@sender.example>",
    )
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    message = email.message_from_bytes(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    # Folded over two lines on the wire; one line once unfolded (RFC 5322 §2.2.3).
    assert " ".join(message["Subject"].split()) == (
        f"Report Domain: bad.example Submitter: sender.example Report-ID: <{rid}>"
    )
    assert message["TLS-Report-Domain"] == "bad.example"
    assert message["TLS-Report-Submitter"] == "sender.example"
    assert message["TLS-Required"] == "No"
    text, attachment = message.get_payload()  # type: ignore[misc]
    assert text.get_content_type() == "text/plain"
    assert "5 successful and 3 failed" in text.get_payload(decode=True).decode()
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment.get_filename() == name
    assert json.loads(gzip.decompress(attachment.get_payload(decode=True))) == GOLDEN
    # Our own receiving side takes the mail as it is.
    found = extract_reports(raw)
    assert (found.is_report, found.domain, found.submitter) == (
        True,
        "bad.example",
        "sender.example",
    )
