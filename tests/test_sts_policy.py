"""RFC 8461 §3.2, one row per rule a policy parser can get wrong."""

from __future__ import annotations

import pytest

from mtasts.sts import Mode, MxPattern, Policy, PolicyError, diagnose_policy, parse_policy

BASE = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"


VALID = [
    (BASE, Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),))),
    (BASE.replace("\n", "\r\n"), Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),))),
    (BASE.rstrip("\n"), Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),))),
    # ":" then optional WSP, and trailing WSP, spaces and tabs
    (
        "version:STSv1\nmode:\tenforce \nmx:  mx.example.com\t\nmax_age:86400",
        Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),)),
    ),
    # field order is free, mx repeats and keeps its order, wildcard patterns
    (
        "max_age: 604800\nmx: *.example.net\nmode: testing\nmx: mx1.example.com\nversion: STSv1",
        Policy(
            Mode.TESTING, 604800, (MxPattern("example.net", True), MxPattern("mx1.example.com"))
        ),
    ),
    # mode none needs no mx
    ("version: STSv1\nmode: none\nmax_age: 86400\n", Policy(Mode.NONE, 86400)),
    # unknown fields are ignored (kept as extensions)
    (
        BASE + "foo: bar baz\n",
        Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),), (("foo", "bar baz"),)),
    ),
    # duplicated single fields keep the first
    (
        BASE + "mode: testing\nmax_age: 1\n",
        Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),)),
    ),
    # max_age bounds: 0 and 31557600; up to 10 digits with leading zeros
    (BASE.replace("86400", "0"), Policy(Mode.ENFORCE, 0, (MxPattern("mx.example.com"),))),
    (
        BASE.replace("86400", "31557600"),
        Policy(Mode.ENFORCE, 31557600, (MxPattern("mx.example.com"),)),
    ),
    (
        BASE.replace("86400", "0000086400"),
        Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),)),
    ),
    # bytes, and a UTF-8 value in an extension
    (
        BASE.encode() + "note: café\n".encode(),
        Policy(Mode.ENFORCE, 86400, (MxPattern("mx.example.com"),), (("note", "café"),)),
    ),
    # upper-case host names are allowed and compare case-insensitively
    (
        BASE.replace("mx.example.com", "MX.Example.COM"),
        Policy(Mode.ENFORCE, 86400, (MxPattern("MX.Example.COM"),)),
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_policies(text: str | bytes, expected: Policy) -> None:
    assert parse_policy(text) == expected


INVALID = [
    ("", "policy.empty", None),
    (" \n\n", "policy.empty", None),
    ("<!DOCTYPE html>\n<html><body>Not Found</body></html>", "policy.html", 1),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "policy.encoding", 1),
    (BASE + "\x00\n", "policy.control", 5),
    ("version: STSv1\nmode enforce\nmx: a.example\nmax_age: 1", "policy.field-syntax", 2),
    ("version: STSv1\nmode : enforce\nmx: a.example\nmax_age: 1", "policy.field-name", 2),
    ("version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1", "policy.version", 1),
    ("version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 1", "policy.version", 1),
    (
        "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1",
        "policy.mode",
        2,
    ),  # case-sensitive
    ("version: STSv1\nmode: report\nmx: a.example\nmax_age: 1", "policy.mode", 2),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1d", "policy.max-age-syntax", 4),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1", "policy.max-age-syntax", 4),
    (
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901",
        "policy.max-age-syntax",
        4,
    ),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601", "policy.max-age-range", 4),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age:", "policy.empty-value", 4),
    ("mode: enforce\nmx: a.example\nmax_age: 1", "policy.version-missing", None),
    ("version: STSv1\nmx: a.example\nmax_age: 1", "policy.mode-missing", None),
    ("version: STSv1\nmode: enforce\nmx: a.example", "policy.max-age-missing", None),
    ("version: STSv1\nmode: enforce\nmax_age: 1", "policy.mx-missing", None),
    ("version: STSv1\nmode: testing\nmax_age: 1", "policy.mx-missing", None),
    ("version: STSv1\nMode: enforce\nmx: a.example\nmax_age: 1", "policy.mode-missing", 2),
    ("version: STSv1\nmode: enforce\nmx: mx*.example.com\nmax_age: 1", "policy.mx-wildcard", 3),
    ("version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 1", "policy.mx-wildcard", 3),
    ("version: STSv1\nmode: enforce\nmx: *\nmax_age: 1", "policy.mx-wildcard", 3),
    ("version: STSv1\nmode: enforce\nmx: mx.example.com.\nmax_age: 1", "policy.mx-syntax", 3),
    ("version: STSv1\nmode: enforce\nmx: -mx.example.com\nmax_age: 1", "policy.mx-syntax", 3),
    ("version: STSv1\nmode: enforce\nmx: mx..example.com\nmax_age: 1", "policy.mx-syntax", 3),
    ("version: STSv1\nmode: enforce\nmx: mx_1.example.com\nmax_age: 1", "policy.mx-syntax", 3),
    ("version: STSv1\nmode: enforce\nmx: " + "a" * 64 + ".com\nmax_age: 1", "policy.mx-syntax", 3),
    ("version: STSv1\nmode: enforce\nmx: bücher.example\nmax_age: 1", "policy.mx-syntax", 3),
    ("version: STSv1\nmode: enforce\nmx: a b.example\nmax_age: 1", "policy.mx-syntax", 3),
]


@pytest.mark.parametrize(("text", "rule", "line"), INVALID)
def test_invalid_policies_name_rule_and_line(
    text: str | bytes, rule: str, line: int | None
) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert info.value.rule == rule
    assert info.value.line == line


FIXES = [
    ("version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1", "mode: enforce"),
    ("version: STSv1\nmode: enforce\nmx: bücher.example\nmax_age: 1", "mx: xn--bcher-kva.example"),
    (
        "version: STSv1\nmode: enforce\nmx: *.bücher.example\nmax_age: 1",
        "mx: *.xn--bcher-kva.example",
    ),
    ("version: STSv1\nmode: enforce\nmx: mx.example.com.\nmax_age: 1", "mx: mx.example.com"),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999", "max_age: 31557600"),
    ("version: STSv1\nMode: testing\nmx: a.example\nmax_age: 1", "mode: testing"),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax-age: 600", "max_age: 600"),
    ("version: sTSv1\nmode: enforce\nmx: a.example\nmax_age: 600", "version: STSv1"),
]


@pytest.mark.parametrize(("text", "fix"), FIXES)
def test_errors_carry_the_corrected_line(text: str, fix: str) -> None:
    assert diagnose_policy(text).errors[0].fix == fix


def test_every_error_is_collected_not_just_the_first() -> None:
    diagnosis = diagnose_policy("version: STSv2\nmode: on\nmx: a..b\nmax_age: x\n")
    assert [e.line for e in diagnosis.errors] == [1, 2, 3, 4]


def test_notes_for_duplicates_and_unknown_fields() -> None:
    diagnosis = diagnose_policy(BASE + "mode: testing\nmx-host: x\n")
    assert diagnosis.policy is not None
    assert {n.rule for n in diagnosis.notes} == {"policy.duplicate-field", "policy.unknown-field"}


@pytest.mark.parametrize(
    "text",
    [
        BASE.replace("\n", "\r\n") + "\r\n",  # the final empty line mox and mimecast reject
        BASE + "\n",
        BASE.replace("mode: enforce\n", "mode: enforce\n\n"),
    ],
    ids=["final-crlf-crlf", "final-lf-lf", "inner"],
)
def test_an_empty_line_is_an_error_strict_senders_reject(text: str) -> None:
    # RFC 8461 §3.2: the grammar has no empty line; at most one line break ends the file.
    diagnosis = diagnose_policy(text)
    assert diagnosis.policy is None
    assert [e.rule for e in diagnosis.errors] == ["policy.blank"]
    assert diagnosis.errors[0].fix
    assert "remove the empty line" in diagnosis.errors[0].fix


def test_canonical_serialisation() -> None:
    policy = Policy(
        Mode.TESTING, 86400, (MxPattern("mx1.example.com"), MxPattern("example.net", True))
    )
    assert str(policy) == (
        "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\nmx: *.example.net\r\n"
        "max_age: 86400\r\n"
    )
    assert parse_policy(str(policy)) == policy


def test_error_str_names_line_and_section() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1")
    assert str(info.value) == (
        "line 2: mode 'Enforce' is not one of testing, enforce, none (case-sensitive)"
        " (RFC 8461 §3.2)"
    )
