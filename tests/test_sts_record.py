"""RFC 8461 §3.1, one row per rule a record parser can get wrong."""

from __future__ import annotations

import pytest

from mtasts.sts import (
    MultipleRecordsError,
    NoRecordError,
    RecordError,
    StsRecord,
    diagnose_record,
    parse_record,
    select_record,
)

VALID = [
    ("v=STSv1; id=20160831085700Z;", StsRecord("20160831085700Z")),
    ("v=STSv1;id=1", StsRecord("1")),  # trailing separator is optional
    ("v=STSv1; id=abc", StsRecord("abc")),
    ("v=STSv1 ;\tid=abc ; ", StsRecord("abc")),  # *WSP ";" *WSP, space and tab
    ("v=STSv1; id=" + "a" * 32, StsRecord("a" * 32)),  # id up to 32 characters
    ("v=STSv1; foo=bar; id=x", StsRecord("x", (("foo", "bar"),))),  # field order is free
    ("v=STSv1; id=x; ext_1.a-b=!~", StsRecord("x", (("ext_1.a-b", "!~"),))),
    ("v=STSv1; id=first; id=second", StsRecord("first")),  # duplicated field keeps the first
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_records(text: str, expected: StsRecord) -> None:
    assert parse_record(text) == expected


INVALID = [
    ("", "record.version-first"),
    ("id=1; v=STSv1", "record.version-first"),  # version must be first
    (" v=STSv1; id=1", "record.version-first"),  # nothing may precede it
    ("V=STSV1; id=1", "record.version-first"),  # case-sensitive
    ("v=STSv1", "record.id-missing"),  # id is required
    ("v=STSv1; id=", "record.id-syntax"),
    ("v=STSv1; id=" + "a" * 33, "record.id-syntax"),  # at most 32
    ("v=STSv1; id=2024-05-21", "record.id-syntax"),  # ALPHA / DIGIT only
    ("v=STSv1; id=abc def", "record.id-syntax"),
    ("v=STSv1;; id=1", "record.empty-field"),
    ("v=STSv1; id", "record.field-syntax"),
    ("v=STSv1; id=1; _x=1", "record.field-name"),  # ext-name starts with ALPHA / DIGIT
    ("v=STSv1; id=1; " + "a" * 33 + "=1", "record.field-name"),  # ext-name at most 32
    ("v=STSv1; id=1; x=a b", "record.extension-value"),  # no space in ext-value
    ("v=STSv1; id=1; x=é", "record.extension-value"),  # ASCII only
]


@pytest.mark.parametrize(("text", "rule"), INVALID)
def test_invalid_records_name_the_rule(text: str, rule: str) -> None:
    with pytest.raises(RecordError) as info:
        parse_record(text)
    assert info.value.rule == rule
    assert info.value.section == "§3.1"


def test_id_fix_suggests_alphanumeric_id() -> None:
    diagnosis = diagnose_record("v=STSv1; id=2024-05-21T10:15")
    assert diagnosis.errors[0].fix == "id=20240521T1015"


def test_duplicate_field_is_noted() -> None:
    diagnosis = diagnose_record("v=STSv1; id=a; id=b")
    assert diagnosis.record == StsRecord("a")
    assert [n.rule for n in diagnosis.notes] == ["record.duplicate-field"]


def test_str_is_the_wire_form_and_round_trips() -> None:
    record = StsRecord("20260521T101500", (("ext", "v"),))
    assert str(record) == "v=STSv1; id=20260521T101500; ext=v;"
    assert parse_record(str(record)) == record


SELECT = [
    # several strings of one record are concatenated without spaces
    ([["v=STSv1; id=", "abc"]], "abc"),
    ([[b"v=STSv1; ", b"id=abc;"]], "abc"),
    # records not beginning with v=STSv1 are discarded
    (["v=spf1 -all", "v=STSv1; id=1"], "1"),
    (["v=STSv10; id=2", "v=STSv1; id=1"], "1"),
    (["google-site-verification=x", ["v=STSv1;", " id=7"]], "7"),
]


@pytest.mark.parametrize(("records", "expected_id"), SELECT)
def test_select_record(records: list[str | list[str] | list[bytes]], expected_id: str) -> None:
    assert select_record(records).id == expected_id


def test_select_none_means_no_policy() -> None:
    with pytest.raises(NoRecordError):
        select_record(["v=spf1 -all"])
    with pytest.raises(NoRecordError):
        select_record([])


def test_select_two_records_means_no_policy() -> None:
    with pytest.raises(MultipleRecordsError) as info:
        select_record(["v=STSv1; id=1", "v=STSv1; id=2"])
    assert "2 records" in info.value.message


def test_select_invalid_single_record_raises_record_error() -> None:
    with pytest.raises(RecordError) as info:
        select_record(["v=STSv1; id=a-b"])
    assert not isinstance(info.value, NoRecordError | MultipleRecordsError)
