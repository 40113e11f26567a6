"""The scan's pure parts: shards, opt-out, providers, pairs, facts completed with shared
probes, adoption statistics and the difference between two scans."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtasts.check.facts import AddressFacts, DomainFacts, MxFacts, TxtFacts
from mtasts.check.judge import judge
from mtasts.net.smtp import SmtpProbe
from mtasts.scan.plan import (
    OptOut,
    PlanError,
    check_scan_name,
    ehlo_name,
    in_shard,
    pairs_of,
    parse_shard,
    probe_jobs,
    provider_of,
    with_probes,
)
from mtasts.scan.stats import adoption, diff

NAMES = [f"d{n}.example" for n in range(2000)]


def test_probe_jobs_hold_one_address_each_and_spread_a_busy_one_over_its_slots() -> None:
    busy = [(f"mx{n}.customer{n}.example", "192.0.2.1") for n in range(400)]
    quiet = [("mx.other.example", "192.0.2.9"), ("mx2.other.example", "2001:db8::9")]
    jobs = probe_jobs(busy + quiet, group=8, per_address=2)
    # Every pair once, each job one address, at most `group` pairs.
    assert sorted(p for j in jobs for p in j.pairs) == sorted(busy + quiet)
    assert all(len({a for _, a in j.pairs}) == 1 and len(j.pairs) <= 8 for j in jobs)
    # The key names the address and one of its `per_address` slots; both slots are used.
    keys = {j.key for j in jobs if j.pairs[0][1] == "192.0.2.1"}
    assert keys == {"192.0.2.1#0", "192.0.2.1#1"}
    assert all(j.key.rsplit("#", 1)[0] == j.pairs[0][1] for j in jobs)
    # The same pairs get the same keys in a second run (a resumed scan keeps its slots).
    assert probe_jobs(busy + quiet, 8, 2) == jobs
    # One slot per address: every key ends in #0.
    assert {j.key.rsplit("#", 1)[1] for j in probe_jobs(busy, 8, 1)} == {"0"}


def test_shards_split_a_list_into_disjoint_parts_that_cover_it() -> None:
    parts = [[d for d in NAMES if in_shard(d, k, 4)] for k in range(1, 5)]
    assert sorted(d for p in parts for d in p) == sorted(NAMES)
    assert all(350 < len(p) < 650 for p in parts)  # a hash, not the input order
    # The same on every call (and machine): no salted hash.
    assert parts[2] == [d for d in NAMES if in_shard(d, 3, 4)]


@pytest.mark.parametrize(
    ("text", "rule"),
    [("0/4", "between 1 and N"), ("5/4", "between 1 and N"), ("2", "K/N"), ("a/b", "K/N")],
)
def test_bad_shards_say_why(text: str, rule: str) -> None:
    with pytest.raises(PlanError, match=rule):
        parse_shard(text)


@given(st.text(max_size=20))
def test_shard_parser_raises_only_its_own_error(text: str) -> None:
    try:
        k, n = parse_shard(text)
    except PlanError:
        return
    assert 1 <= k <= n


@given(st.lists(st.text(max_size=40), max_size=20))
def test_opt_out_parser_reports_bad_lines_and_never_raises(lines: list[str]) -> None:
    opt_out, problems = OptOut.parse((t, f"optout:{n}") for n, t in enumerate(lines, 1))
    assert all(p.startswith("optout:") for p in problems)
    assert isinstance(opt_out.domain("example.com"), bool)


def test_opt_out_covers_domains_mx_hosts_and_networks() -> None:
    opt_out, problems = OptOut.parse(
        [
            ("private.example  # asked on 2026-11-02", "f:1"),
            ("*.bigmail.example", "f:2"),
            ("192.0.2.0/24", "f:3"),
            ("not a name", "f:4"),
        ]
    )
    assert problems == ["f:4: 'not a name' is neither a domain, an MX host nor an address"]
    assert opt_out.domain("private.example")
    assert opt_out.domain("sub.private.example")
    assert not opt_out.domain("public.example")
    assert opt_out.pair(("mx3.bigmail.example", "198.51.100.7"))
    assert opt_out.pair(("mx.other.example", "192.0.2.25"))
    assert not opt_out.pair(("mx.other.example", "198.51.100.7"))


def test_providers_and_names() -> None:
    assert provider_of("MX1.Provider007.example.") == "provider007.example"
    assert provider_of("example-com.mail.protection.outlook.com") == "outlook.com"
    assert provider_of("mx.example.co.uk") == "example.co.uk"
    assert ehlo_name("Tranco 2026/12") == "tranco-2026-12.mtasts-scan.invalid"
    assert check_scan_name("tranco-2026.12") == "tranco-2026.12"
    with pytest.raises(PlanError, match="letters"):
        check_scan_name("a b")


def _facts() -> DomainFacts:
    mx = (
        MxFacts("mx1.p.example", 10, addresses=(AddressFacts("192.0.2.1", ()),)),
        MxFacts(
            "mx2.p.example",
            20,
            addresses=(AddressFacts("192.0.2.1", ()), AddressFacts("192.0.2.2", ())),
        ),
    )
    return DomainFacts(
        "a.example",
        dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
        TxtFacts(),
        TxtFacts(),
        mx_listed=2,
        mx=mx,
    )


def test_shared_probes_fill_in_each_pair_and_opted_out_ones_are_skipped() -> None:
    facts = _facts()
    assert pairs_of(facts) == [
        ("mx1.p.example", "192.0.2.1"),
        ("mx2.p.example", "192.0.2.1"),
        ("mx2.p.example", "192.0.2.2"),
    ]
    plain = SmtpProbe("mx1.p.example", "192.0.2.1", 25, True, "220 hi", False)
    probes = {
        ("mx1.p.example", "192.0.2.1"): [plain],
        ("mx2.p.example", "192.0.2.1"): [plain],
        ("mx2.p.example", "192.0.2.2"): None,
    }
    full = with_probes(facts, probes)
    assert [len(a.probes) for m in full.mx for a in m.addresses] == [1, 1]
    assert full.mx[1].addresses_skipped == 1
    codes = {str(f.code) for f in judge(full).findings}
    assert "starttls-not-supported" in codes
    with pytest.raises(KeyError):
        with_probes(facts, {})


def _doc(domain: str, mode: str | None, errors: list[str]) -> dict[str, object]:
    return {
        "domain": domain,
        "verdict": "error" if errors else "ok",
        "summary": {"mta_sts": mode, "tlsrpt": mode is not None},
        "findings": [{"code": c, "severity": "error"} for c in errors],
    }


def test_adoption_counts_modes_failures_and_providers() -> None:
    totals = adoption(
        [
            (_doc("a.example", "enforce", []), "p.example"),
            (_doc("b.example", "testing", ["certificate-expired"]), "p.example"),
            (_doc("c.example", None, []), "q.example"),
        ]
    ).to_dict()
    assert totals["domains"] == 3
    assert totals["mta_sts"] == {"enforce": 1, "testing": 1, "absent": 1}
    assert totals["tlsrpt"] == 2
    assert totals["failures"] == {"certificate-expired": 1}
    assert list(totals["top_providers"]) == ["p.example", "q.example"]
    assert totals["top_providers"]["p.example"]["domains"] == 2


def test_diff_names_adopted_dropped_downgraded_and_newly_broken() -> None:
    before = {
        "new.example": _doc("new.example", None, []),
        "gone.example": _doc("gone.example", "enforce", []),
        "down.example": _doc("down.example", "enforce", []),
        "up.example": _doc("up.example", "testing", []),
        "broke.example": _doc("broke.example", "enforce", []),
        "fixed.example": _doc("fixed.example", "enforce", ["certificate-expired"]),
        "old.example": _doc("old.example", None, []),
    }
    after = {
        "new.example": _doc("new.example", "testing", []),
        "gone.example": _doc("gone.example", None, []),
        "down.example": _doc("down.example", "testing", []),
        "up.example": _doc("up.example", "enforce", []),
        "broke.example": _doc("broke.example", "enforce", ["starttls-not-supported"]),
        "fixed.example": _doc("fixed.example", "enforce", []),
        "added.example": _doc("added.example", None, []),
    }
    result = diff(before, after).to_dict()
    assert result["adopted"] == ["new.example"]
    assert result["dropped"] == ["gone.example"]
    assert result["downgraded"] == ["down.example"]
    assert result["upgraded"] == ["up.example"]
    assert result["newly_broken"] == {"broke.example": ["starttls-not-supported"]}
    assert result["fixed"] == ["fixed.example"]
    assert result["only_in_first"] == ["old.example"]
    assert result["only_in_second"] == ["added.example"]
