"""Property tests: round-trips hold, and no input raises anything but the typed errors."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from mtasts import sts, tlsrpt
from mtasts.sts import Mode, MxPattern, Policy, StsRecord
from mtasts.tlsrpt import (
    DateRange,
    FailureDetail,
    PolicyResult,
    PolicyType,
    Report,
    ReportPolicy,
    ResultType,
    TlsRptRecord,
)

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
domain = st.lists(label, min_size=2, max_size=4).map(".".join)
ext_name = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z").filter(
    lambda n: n not in {"version", "mode", "max_age", "mx", "id", "rua"}
)
policy_value = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_categories=("Cc", "Cs", "Zs")),
    min_size=1,
    max_size=12,
)
record_value = st.from_regex(r"\A[\x21-\x3a\x3c\x3e-\x7e]{1,12}\Z")


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    mode = draw(st.sampled_from(list(Mode)))
    mx = draw(
        st.lists(
            st.builds(MxPattern, domain, st.booleans()),
            min_size=0 if mode is Mode.NONE else 1,
            max_size=4,
        )
    )
    extensions = draw(st.lists(st.tuples(ext_name, policy_value), max_size=3))
    return Policy(mode, draw(st.integers(0, sts.MAX_MAX_AGE)), tuple(mx), tuple(extensions))


@given(policies())
def test_policy_round_trip(policy: Policy) -> None:
    assert sts.parse_policy(str(policy)) == policy
    assert sts.parse_policy(str(policy).encode()) == policy
    assert sts.parse_policy(str(policy).replace("\r\n", "\n")) == policy


@given(
    st.text(ALNUM, min_size=1, max_size=32),
    st.lists(st.tuples(ext_name, record_value), max_size=3, unique_by=lambda kv: kv[0]),
)
def test_sts_record_round_trip(ident: str, extensions: list[tuple[str, str]]) -> None:
    record = StsRecord(ident, tuple(extensions))
    assert sts.parse_record(str(record)) == record
    assert sts.select_record([[str(record)[:5], str(record)[5:]]]) == record


@given(
    st.lists(
        st.sampled_from(["mailto:tls@example.com", "https://r.example.net/x"]),
        min_size=1,
        max_size=3,
    )
)
def test_tlsrpt_record_round_trip(rua: list[str]) -> None:
    record = TlsRptRecord(tuple(rua))
    assert tlsrpt.parse_record(str(record)) == record


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_policy_parser_raises_only_policy_error(data: bytes) -> None:
    with contextlib.suppress(sts.PolicyError):
        sts.parse_policy(data)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_policy_text_raises_only_policy_error(text: str) -> None:
    with contextlib.suppress(sts.PolicyError):
        sts.parse_policy("version: STSv1\nmode: enforce\n" + text)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=80), st.binary(max_size=80), st.lists(st.text(max_size=40), max_size=3)
        ),
        max_size=4,
    )
)
def test_record_selection_raises_only_record_errors(records: list[str | bytes | list[str]]) -> None:
    for prefix in ("", "v=STSv1;", "v=TLSRPTv1;"):
        candidates = [prefix + r if isinstance(r, str) else r for r in records]
        with contextlib.suppress(sts.RecordError):
            sts.select_record(candidates)
        with contextlib.suppress(tlsrpt.TlsRptRecordError):
            tlsrpt.select_record(candidates)


times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
opt_text = st.one_of(st.none(), st.text(min_size=1, max_size=20))


@st.composite
def reports(draw: st.DrawFn) -> Report:
    start = draw(times)
    results = []
    for _ in range(draw(st.integers(1, 3))):
        details = draw(
            st.lists(
                st.builds(
                    FailureDetail,
                    st.sampled_from([r.value for r in ResultType]),
                    st.integers(0, 1000),
                    st.one_of(st.none(), st.ip_addresses().map(str)),
                    opt_text,
                    opt_text,
                    st.one_of(st.none(), st.ip_addresses().map(str)),
                    opt_text,
                    opt_text,
                ),
                max_size=3,
            )
        )
        policy_type = draw(st.sampled_from(list(PolicyType)))
        policy_string = (
            draw(st.lists(st.text(max_size=20), min_size=1, max_size=4).map(tuple))
            if policy_type is not PolicyType.NO_POLICY_FOUND
            else None
        )
        policy = ReportPolicy(
            policy_type, draw(domain), policy_string, tuple(draw(st.lists(domain, max_size=3)))
        )
        failed = sum(d.failed_session_count for d in details) + draw(st.integers(0, 5))
        results.append(PolicyResult(policy, draw(st.integers(0, 10**9)), failed, tuple(details)))
    return Report(
        draw(st.text(min_size=1, max_size=30)),
        DateRange(start, start + timedelta(seconds=draw(st.integers(0, 86400 * 2)))),
        draw(st.text(min_size=1, max_size=30)),
        draw(st.text(min_size=1, max_size=40)),
        tuple(results),
    )


@given(reports())
def test_report_round_trip(report: Report) -> None:
    assert tlsrpt.parse_report(report.to_json(), strict=True) == report


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_report_parser_raises_only_report_error_on_bytes(data: bytes) -> None:
    with contextlib.suppress(tlsrpt.ReportError):
        tlsrpt.parse_report(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=15,
)
report_keys = st.sampled_from(
    [
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
        "policy",
        "summary",
        "failure-details",
        "policy-type",
        "policy-domain",
        "result-type",
        "failed-session-count",
        "start-datetime",
        "end-datetime",
        "total-successful-session-count",
        "mx-host",
    ]
)


@settings(max_examples=300)
@given(
    st.dictionaries(
        report_keys, json_values | st.dictionaries(report_keys, json_values, max_size=5), max_size=8
    ),
    st.booleans(),
)
def test_report_parser_raises_only_report_error_on_json_shapes(
    doc: dict[str, object], strict: bool
) -> None:
    with contextlib.suppress(tlsrpt.ReportError):
        tlsrpt.parse_report(json.dumps(doc), strict=strict)


mime_like = st.one_of(
    st.binary(max_size=600),
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: multipart/report; report-type=tlsrpt; boundary=b\r\n",
                b"\r\n",
                b"--b\r\n",
                b"Content-Type: application/tlsrpt+gzip\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"H4sIAAAAAAAA\r\n",
                b"--b--\r\n",
                b"Content-Type: application/json; name=r.json\r\n",
                b"{}",
                b'Content-Disposition: attachment; filename="x.json.gz"\r\n',
                b"\xff\xfe",
                b"=?utf-8?q?x?=",
            ]
        ),
        max_size=12,
    ).map(b"".join),
)


@settings(max_examples=300)
@given(mime_like)
def test_report_mail_extraction_never_raises(data: bytes) -> None:
    from mtasts.tlsrpt.mail import extract_reports

    mail = extract_reports(data)
    assert all(isinstance(part.data, bytes) and part.data for part in mail.parts)


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_zip_expansion_raises_only_report_error(data: bytes) -> None:
    from mtasts.tlsrpt.mail import expand_zip

    with contextlib.suppress(tlsrpt.ReportError):
        expand_zip(b"PK\x03\x04" + data)


@settings(max_examples=500)
@given(
    st.text(st.characters(codec="utf-8") | st.sampled_from("\t\n\x00\x7f\x85\ud800")),
    st.none() | st.integers(20, 80),
    st.booleans(),
)
def test_cleaning_printable_ascii_early_changes_no_value(
    value: str, limit: int | None, one_line: bool
) -> None:
    """clean() returns printable ASCII within the limit as it is, without the regexes:
    for every text at all that must be what the full scrub gives."""
    from mtasts.reports.normalise import _scrub, clean

    assert clean(value, limit, one_line=one_line) == _scrub(value, limit, one_line=one_line)
