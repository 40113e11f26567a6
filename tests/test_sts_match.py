"""RFC 8461 §4.1 (MX patterns) and §4.2 with RFC 6125 (certificate names)."""

from __future__ import annotations

import pytest

from mtasts.sts import MxPattern, cert_matches, parse_policy

MX = [
    ("mx.example.com", "mx.example.com", True),
    ("mx.example.com", "MX.EXAMPLE.COM", True),  # case-insensitive
    ("MX.example.com", "mx.example.com", True),
    ("mx.example.com", "mx.example.com.", True),  # trailing root dot ignored
    ("mx.example.com", "mx2.example.com", False),
    ("mx.example.com", "example.com", False),
    ("*.example.com", "mx.example.com", True),
    ("*.example.com", "MX1.Example.Com.", True),
    ("*.example.com", "example.com", False),  # the wildcard needs one label
    ("*.example.com", "a.b.example.com", False),  # and only one
    ("*.example.com", ".example.com", False),
    ("*.example.com", "*.example.com", False),  # a host name is never a pattern
    ("*.mail.example.com", "mx1.mail.example.com", True),
    ("xn--bcher-kva.example", "bücher.example", True),  # U-label host, A-label pattern
]


@pytest.mark.parametrize(("pattern", "host", "expected"), MX)
def test_mx_pattern_matching(pattern: str, host: str, expected: bool) -> None:
    assert MxPattern.parse(pattern).matches(host) is expected


def test_policy_matches_any_pattern() -> None:
    policy = parse_policy(
        "version: STSv1\nmode: enforce\nmx: a.example\nmx: *.b.example\nmax_age: 1"
    )
    assert policy.matches_mx("a.example")
    assert policy.matches_mx("x.b.example")
    assert not policy.matches_mx("b.example")


CERT = [
    (["mx.example.com"], "mx.example.com", True),
    (["MX.Example.com"], "mx.example.COM.", True),
    (["mx.example.com."], "mx.example.com", True),
    (["other.example.com", "mx.example.com"], "mx.example.com", True),
    (["server123.provider.net"], "mx.example.com", False),  # the article's CNAME case
    (["*.example.com"], "mx.example.com", True),
    (["*.example.com"], "example.com", False),
    (["*.example.com"], "a.mx.example.com", False),  # exactly one label
    (["mx*.example.com"], "mx1.example.com", False),  # only a complete left-most label
    (["*mx.example.com"], "amx.example.com", False),
    (["m*x.example.com"], "mx.example.com", False),
    (["*.*.example.com"], "a.b.example.com", False),
    (["a.*.example.com"], "a.b.example.com", False),  # only left-most
    (["*.com"], "example.com", False),  # no wildcard directly under a single label
    (["*"], "example", False),
    ([], "mx.example.com", False),
    (["mx.example.com"], "", False),
    (["xn--bcher-kva.example"], "bücher.example", True),
]


@pytest.mark.parametrize(("names", "host", "expected"), CERT)
def test_certificate_name_matching(names: list[str], host: str, expected: bool) -> None:
    assert cert_matches(names, host) is expected


@pytest.mark.parametrize(
    ("given", "asked"),
    [
        ("Example.COM.", "example.com"),
        ("  bücher.example ", "xn--bcher-kva.example"),  # IDNA: DNS carries the A-label
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("bad..name", "bad..name"),  # left for domain_problem to name
    ],
)
def test_domains_are_asked_lower_case_as_a_labels(given: str, asked: str) -> None:
    from mtasts.sts.domain import as_asked

    assert as_asked(given) == asked
