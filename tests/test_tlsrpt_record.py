"""RFC 8460 §3, one row per rule of the ``_smtp._tls`` record."""

from __future__ import annotations

import pytest

from mtasts.tlsrpt import (
    MultipleTlsRptRecordsError,
    NoTlsRptRecordError,
    TlsRptRecord,
    TlsRptRecordError,
    diagnose_record,
    parse_record,
    select_record,
)

VALID = [
    ("v=TLSRPTv1; rua=mailto:tls@example.com", TlsRptRecord(("mailto:tls@example.com",))),
    (
        "v=TLSRPTv1;rua=https://r.example.com/tlsrpt;",
        TlsRptRecord(("https://r.example.com/tlsrpt",)),
    ),
    (
        "v=TLSRPTv1; rua=mailto:a@example.com , https://r.example.com/x",  # *WSP "," *WSP
        TlsRptRecord(("mailto:a@example.com", "https://r.example.com/x")),
    ),
    ("v=TLSRPTv1; rua=MAILTO:a@example.com", TlsRptRecord(("MAILTO:a@example.com",))),
    ("v=TLSRPTv1 ;\trua=mailto:a@example.com", TlsRptRecord(("mailto:a@example.com",))),
    (
        "v=TLSRPTv1; x=1; rua=mailto:a@example.com",
        TlsRptRecord(("mailto:a@example.com",), (("x", "1"),)),
    ),
    (
        # RFC 8460 §3's grammar allows several rua fields: all their URIs get reports.
        "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com",
        TlsRptRecord(("mailto:a@example.com", "mailto:b@example.com")),
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_records(text: str, expected: TlsRptRecord) -> None:
    assert parse_record(text) == expected


INVALID = [
    ("rua=mailto:a@example.com; v=TLSRPTv1", "record.version-first", None),
    (
        "v=tlsrptv1; rua=mailto:a@example.com",
        "record.version-first",
        "v=TLSRPTv1; rua=mailto:a@example.com",
    ),
    ("v=TLSRPTv1", "record.rua-missing", "v=TLSRPTv1; rua=mailto:tlsrpt@<your domain>"),
    ("v=TLSRPTv1; rua=http://r.example.com/x", "record.rua-uri", "rua=https://r.example.com/x"),
    ("v=TLSRPTv1; rua=tls@example.com", "record.rua-uri", "rua=mailto:tls@example.com"),
    ("v=TLSRPTv1; rua=ftp://r.example.com/x", "record.rua-uri", None),
    ("v=TLSRPTv1; rua=mailto:not-an-address", "record.rua-uri", None),
    ("v=TLSRPTv1; rua=https:///nohost", "record.rua-uri", None),
    ("v=TLSRPTv1; rua=mailto:a@example.com,", "record.rua-uri", None),
    ("v=TLSRPTv1;; rua=mailto:a@example.com", "record.empty-field", None),
]


@pytest.mark.parametrize(("text", "rule", "fix"), INVALID)
def test_invalid_records(text: str, rule: str, fix: str | None) -> None:
    diagnosis = diagnose_record(text)
    assert diagnosis.record is None
    assert diagnosis.errors[0].rule == rule
    assert diagnosis.errors[0].fix == fix
    with pytest.raises(TlsRptRecordError):
        parse_record(text)


def test_mailto_and_https_accessors() -> None:
    record = parse_record("v=TLSRPTv1; rua=mailto:a@example.com?subject=x,https://r.example.com/")
    assert record.mailto == ("a@example.com",)
    assert record.https == ("https://r.example.com/",)
    assert parse_record(str(record)) == record


def test_select_rules() -> None:
    assert select_record(["v=spf1 -all", ["v=TLSRPTv1; ", "rua=mailto:a@example.com"]]).rua == (
        "mailto:a@example.com",
    )
    with pytest.raises(NoTlsRptRecordError):
        select_record(["v=STSv1; id=1"])
    with pytest.raises(MultipleTlsRptRecordsError):
        select_record(
            ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"]
        )
