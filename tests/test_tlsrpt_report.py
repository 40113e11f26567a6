"""RFC 8460 §4: the report model, lenient and strict parsing, and hostile input."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mtasts.tlsrpt import (
    PolicyType,
    ReportError,
    ReportTooLargeError,
    ResultType,
    parse_report,
)

# The example of RFC 8460 §4.5, with mx-host as a list as Google sends it.
RFC_EXAMPLE: dict[str, Any] = {
    "organization-name": "Company-X",
    "date-range": {
        "start-datetime": "2016-04-01T00:00:00Z",
        "end-datetime": "2016-04-01T23:59:59Z",
    },
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [
        {
            "policy": {
                "policy-type": "sts",
                "policy-string": [
                    "version: STSv1",
                    "mode: testing",
                    "mx: *.mail.company-y.example",
                    "max_age: 86400",
                ],
                "policy-domain": "company-y.example",
                "mx-host": "*.mail.company-y.example",
            },
            "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
            "failure-details": [
                {
                    "result-type": "certificate-expired",
                    "sending-mta-ip": "2001:db8:abcd:0012::1",
                    "receiving-mx-hostname": "mx1.mail.company-y.example",
                    "failed-session-count": 100,
                },
                {
                    "result-type": "starttls-not-supported",
                    "sending-mta-ip": "2001:db8:abcd:0013::1",
                    "receiving-mx-hostname": "mx2.mail.company-y.example",
                    "receiving-ip": "203.0.113.56",
                    "failed-session-count": 200,
                    "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
                },
                {
                    "result-type": "validation-failure",
                    "sending-mta-ip": "198.51.100.62",
                    "receiving-ip": "198.51.100.62",
                    "failed-session-count": 3,
                    "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
                },
            ],
        }
    ],
}


def encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_rfc_example_parses_into_typed_values() -> None:
    report = parse_report(encoded(RFC_EXAMPLE), strict=True)
    assert report.organization_name == "Company-X"
    assert report.date_range.start == datetime(2016, 4, 1, tzinfo=UTC)
    (policy,) = report.policies
    assert policy.policy.policy_type is PolicyType.STS
    assert policy.policy.mx_host == ("*.mail.company-y.example",)
    assert (policy.successful_sessions, policy.failed_sessions) == (5326, 303)
    assert [d.result for d in policy.failure_details] == [
        ResultType.CERTIFICATE_EXPIRED,
        ResultType.STARTTLS_NOT_SUPPORTED,
        ResultType.VALIDATION_FAILURE,
    ]
    assert policy.failure_details[0].sending_mta_ip == "2001:db8:abcd:12::1"
    assert report.warnings == ()


def test_gzip_and_round_trip() -> None:
    report = parse_report(gzip.compress(encoded(RFC_EXAMPLE)))
    assert parse_report(report.to_json()) == report
    assert parse_report(gzip.compress(report.to_json().encode())) == report


def test_all_result_types_of_section_4_3() -> None:
    assert {r.value for r in ResultType} == {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "tlsa-invalid",
        "dnssec-invalid",
        "dane-required",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
    }


def mutate(path: list[str | int], value: Any) -> dict[str, Any]:
    """The RFC example with one field set (value ...) or deleted (value DELETE)."""
    doc = copy.deepcopy(RFC_EXAMPLE)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()
DETAIL0 = ["policies", 0, "failure-details", 0]
POLICY = ["policies", 0, "policy"]

# Real-world deviations: lenient accepts with a warning naming the field; strict rejects.
DEVIATIONS = [
    ([*DETAIL0, "sending-mta-ip"], "", "sending-mta-ip"),  # empty string for absent
    ([*POLICY, "policy-string"], DELETE, "policy-string"),  # Mail.ru
    ([*DETAIL0, "result-type"], "certificate-mismatched", "result-type"),  # invented type
    ([*DETAIL0, "failed-session-count"], "100", "failed-session-count"),  # count as string
    (["policies", 0, "summary", "total-failure-session-count"], 1, "total-failure-session-count"),
    (["extra-field"], {"x": 1}, "extra-field"),
    (["date-range", "start-datetime"], "2016-04-01T00:00:00", "start-datetime"),  # no zone
    ([*DETAIL0, "receiving-ip"], "not-an-ip", "receiving-ip"),
    (["contact-info"], DELETE, "contact-info"),
    ([*POLICY, "policy-type"], "STS", "policy-type"),
    (["policies"], [], "policies"),
]


@pytest.mark.parametrize(("path", "value", "named"), DEVIATIONS)
def test_deviations_are_warnings_when_lenient_and_errors_when_strict(
    path: list[str | int], value: Any, named: str
) -> None:
    data = encoded(mutate(path, value))
    report = parse_report(data)
    assert any(named in w for w in report.warnings), report.warnings
    with pytest.raises(ReportError) as info:
        parse_report(data, strict=True)
    assert named in str(info.value)


def test_no_policy_found_needs_no_policy_string() -> None:
    doc = mutate([*POLICY, "policy-type"], "no-policy-found")
    del doc["policies"][0]["policy"]["policy-string"]
    report = parse_report(encoded(doc), strict=True)
    assert report.policies[0].policy.policy_type is PolicyType.NO_POLICY_FOUND


def test_microsoft_style_missing_ips_are_fine() -> None:
    doc = mutate([*DETAIL0, "sending-mta-ip"], DELETE)
    assert (
        parse_report(encoded(doc), strict=True).policies[0].failure_details[0].sending_mta_ip
        is None
    )


FATAL = [
    (b"", "report.json"),
    (b"not json", "report.json"),
    (b"[1, 2]", "report.type"),
    (b"\xff\xfe{}", "report.encoding"),
    (b"[" * 100000 + b"]" * 100000, "report.json"),
    (b'{"x": ' + b"9" * 5000 + b"}", "report.json"),
    (b"\x1f\x8b\x08\x00garbage", "report.gzip"),
    (gzip.compress(encoded(RFC_EXAMPLE))[:-12], "report.gzip"),
    (encoded(mutate(["report-id"], DELETE)), "report.missing"),
    (encoded(mutate(["report-id"], 7)), "report.type"),
    (encoded(mutate([*DETAIL0, "failed-session-count"], -5)), "report.count-negative"),
    (encoded(mutate([*DETAIL0, "failed-session-count"], 10**15)), "report.count-absurd"),
    (encoded(mutate([*DETAIL0, "failed-session-count"], True)), "report.count"),
    (encoded(mutate([*DETAIL0, "failed-session-count"], 1.5)), "report.count"),
    (encoded(mutate(["date-range", "start-datetime"], "01/04/2016")), "report.date"),
    (encoded(mutate(["date-range", "end-datetime"], "2015-01-01T00:00:00Z")), "report.date-order"),
    (encoded(mutate([*POLICY, "policy-type"], "dmarc")), "report.policy-type"),
    (encoded(mutate([*POLICY, "policy-domain"], DELETE)), "report.missing"),
    (encoded(mutate(["policies"], {"a": 1})), "report.type"),
    (encoded(mutate([*POLICY, "mx-host"], [1, 2])), "report.type"),
]


@pytest.mark.parametrize(("data", "rule"), FATAL)
def test_unusable_input_raises_report_error_naming_the_rule(data: bytes, rule: str) -> None:
    with pytest.raises(ReportError) as info:
        parse_report(data)
    assert info.value.rule == rule


def test_gzip_bomb_is_refused_without_inflating_it_all() -> None:
    bomb = gzip.compress(b"{" + b" " * (30 * 1024 * 1024) + b"}")
    assert len(bomb) < 100_000
    with pytest.raises(ReportTooLargeError):
        parse_report(bomb)
    with pytest.raises(ReportTooLargeError):
        parse_report(gzip.compress(encoded(RFC_EXAMPLE)), max_size=100)


def test_oversized_plain_body_is_refused() -> None:
    with pytest.raises(ReportTooLargeError):
        parse_report(encoded(RFC_EXAMPLE), max_size=50)


def test_a_report_error_crosses_processes_whole() -> None:
    """ingest --jobs parses in worker processes: the error must come back with its rule."""
    import pickle

    from mtasts.tlsrpt import ReportTooLargeError

    for error in (
        ReportError("bad date", rule="report.date", section="§4.4", field="date-range"),
        ReportTooLargeError("too big", rule="report.too-large", section="§5.3", fix="smaller"),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert (back.message, back.rule, back.section, back.field, back.fix) == (
            error.message,
            error.rule,
            error.section,
            error.field,
            error.fix,
        )
        assert str(back) == str(error)
