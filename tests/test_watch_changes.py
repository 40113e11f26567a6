"""Change detection, table-driven: the state before, the snapshot now -> the exact events."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtasts.check.findings import Severity
from mtasts.config import ConfigError
from mtasts.lab.control import Change, ChangeError
from mtasts.watch.changes import PARTNER, DomainState, Rules, detect
from mtasts.watch.config import duration, read_partners
from mtasts.watch.events import Event, EventCode, EventStatus
from mtasts.watch.report_changes import DayStat, ReportRules, report_events
from mtasts.watch.snapshot import AddressSnap, CertSnap, Snapshot

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DOMAIN = "example.com"
POLICY = "version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"


def cert(days: float, sha: str = "aa" * 32, at: dt.datetime = T0) -> CertSnap:
    return CertSnap(sha, at + dt.timedelta(days=days), ("mx.example.com",), "CN=CA")


def snap(at: dt.datetime = T0, **changes: object) -> Snapshot:
    base = Snapshot(
        observed_at=at,
        sts="present",
        sts_id="20261201",
        policy_text=POLICY,
        mode="testing",
        max_age=86400,
        mx_patterns=("mx.example.com",),
        mx_hosts=("mx.example.com",),
        addresses={
            "mx.example.com [192.0.2.1]": AddressSnap("mx.example.com", "192.0.2.1", True, cert(80))
        },
        tlsrpt=("mailto:tlsrpt@example.com",),
        adoption="testing",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


OWN_RULES = Rules()


def run(
    *snapshots: Snapshot, rules: Rules = OWN_RULES, state: DomainState | None = None
) -> tuple[DomainState, list[list[Event]]]:
    state = state or DomainState()
    found = []
    for s in snapshots:
        state, events = detect(DOMAIN, state, s, rules)
        found.append(events)
    return state, found


def codes(events: list[Event]) -> list[tuple[str, str]]:
    return [(str(e.code), str(e.status)) for e in events]


def test_first_observation_is_a_baseline_without_change_events() -> None:
    _, (first,) = run(snap())
    assert first == []


def test_unchanged_observations_say_nothing() -> None:
    _, found = run(snap(), snap(T0 + HOUR), snap(T0 + 2 * HOUR))
    assert found == [[], [], []]


def test_policy_text_changed_without_a_new_id_is_an_error_with_the_cache_horizon() -> None:
    changed = POLICY.replace("max_age: 86400", "max_age: 604800")
    state, (_, _, second) = run(
        snap(), snap(T0 + HOUR), snap(T0 + 2 * HOUR, policy_text=changed, max_age=604800)
    )
    assert codes(second) == [
        ("policy-changed-without-id", "changed"),
        ("max-age-changed", "changed"),
    ]
    without_id = second[0]
    assert without_id.severity is Severity.ERROR
    # last served at T0+1h, old max_age one day: senders may hold it until then
    assert without_id.horizon == T0 + HOUR + dt.timedelta(days=1)
    assert state.horizon == without_id.horizon
    assert second[1].before == "86400"
    assert second[1].after == "604800"


def test_a_new_id_with_a_stricter_mode_says_both_and_the_direction() -> None:
    enforce = POLICY.replace("testing", "enforce")
    _, (_, second) = run(
        snap(), snap(T0 + HOUR, sts_id="20261202", policy_text=enforce, mode="enforce")
    )
    assert codes(second) == [("policy-id-changed", "changed"), ("mode-changed", "changed")]
    assert second[0].before == "20261201"
    assert second[0].after == "20261202"
    assert "stricter" in second[1].message
    assert second[1].severity is Severity.INFO
    assert second[1].horizon == T0 + dt.timedelta(days=1)


def test_a_weaker_mode_is_a_warning() -> None:
    enforcing = snap(policy_text=POLICY.replace("testing", "enforce"), mode="enforce")
    _, (_, second) = run(enforcing, snap(T0 + HOUR, sts_id="20261202"))
    mode = next(e for e in second if e.code is EventCode.MODE_CHANGED)
    assert mode.severity is Severity.WARNING
    assert "weaker" in mode.message


def test_record_removal_is_confirmed_by_a_second_run() -> None:
    gone = {"sts": "absent", "sts_id": None, "policy_text": None, "mode": None, "max_age": None}
    _, (_, once, twice, thrice) = run(
        snap(), snap(T0 + HOUR, **gone), snap(T0 + 2 * HOUR, **gone), snap(T0 + 3 * HOUR, **gone)
    )
    assert once == []
    assert codes(twice) == [("sts-record-removed", "changed")]
    assert twice[0].horizon == T0 + dt.timedelta(days=1)  # last served at T0
    assert thrice == []


def test_a_record_that_comes_back_after_one_missing_run_was_never_removed() -> None:
    gone = {"sts": "absent", "sts_id": None, "policy_text": None}
    _, found = run(snap(), snap(T0 + HOUR, **gone), snap(T0 + 2 * HOUR))
    assert found == [[], [], []]


def test_a_dns_timeout_is_never_a_removal() -> None:
    unknown = {"sts": "unavailable", "sts_id": None, "policy_text": None, "mode": None}
    gone = {"sts": "absent", "sts_id": None, "policy_text": None}
    _, found = run(
        snap(),
        snap(T0 + HOUR, **unknown),
        snap(T0 + 2 * HOUR, **unknown),
        snap(T0 + 3 * HOUR),
        snap(T0 + 4 * HOUR, **unknown),
        snap(T0 + 5 * HOUR, **gone),
        snap(T0 + 6 * HOUR, **unknown),
        snap(T0 + 7 * HOUR, **gone),
        snap(T0 + 8 * HOUR, **gone),
    )
    before_confirmation = [code for events in found[:7] for code in codes(events)]
    assert ("sts-record-removed", "changed") not in before_confirmation
    assert codes(found[1]) == [("dns-unavailable", "opened")]
    assert found[2] == []
    assert codes(found[3]) == [("dns-unavailable", "resolved")]  # not sts-record-added
    # absent, unknown, absent: the unknown run breaks nothing; the two absent runs confirm it
    assert codes(found[7]) == [("sts-record-removed", "changed"), ("dns-unavailable", "resolved")]
    assert found[8] == []


def test_a_record_that_appears_is_added() -> None:
    none = {"sts": "absent", "sts_id": None, "policy_text": None, "mode": None, "adoption": "none"}
    _, (_, second) = run(snap(**none), snap(T0 + HOUR))
    assert codes(second) == [("sts-record-added", "changed")]


def test_mx_set_addresses_certificate_and_starttls_changes() -> None:
    two = {
        "mx.example.com [192.0.2.1]": AddressSnap("mx.example.com", "192.0.2.1", True, cert(80)),
        "mx.example.com [192.0.2.2]": AddressSnap("mx.example.com", "192.0.2.2", True, cert(80)),
    }
    _, (_, added, renewed, dropped, moved) = run(
        snap(),
        snap(T0 + HOUR, addresses=two),
        snap(
            T0 + 2 * HOUR,
            addresses={
                **two,
                "mx.example.com [192.0.2.1]": AddressSnap(
                    "mx.example.com", "192.0.2.1", True, cert(90, "bb" * 32)
                ),
            },
        ),
        snap(
            T0 + 3 * HOUR,
            addresses={
                "mx.example.com [192.0.2.1]": AddressSnap(
                    "mx.example.com", "192.0.2.1", False, None
                )
            },
        ),
        snap(
            T0 + 4 * HOUR,
            mx_hosts=("mx2.example.com",),
            addresses={
                "mx2.example.com [192.0.2.9]": AddressSnap(
                    "mx2.example.com", "192.0.2.9", True, cert(80)
                )
            },
        ),
    )
    assert codes(added) == [("mx-address-added", "changed")]
    assert added[0].subject == "mx.example.com [192.0.2.2]"
    assert codes(renewed) == [("certificate-changed", "changed")]
    assert "bbbbbbbb" in (renewed[0].after or "")
    assert codes(dropped) == [
        ("starttls-dropped", "changed"),
        ("mx-address-removed", "changed"),
    ]
    assert codes(moved) == [("mx-changed", "changed")]
    assert moved[0].before == "mx.example.com"
    assert moved[0].after == "mx2.example.com"


def test_certificate_expiry_is_said_once_per_threshold_per_address_then_resolved() -> None:
    def at(days_later: float, left: float, sha: str = "aa" * 32) -> Snapshot:
        moment = T0 + dt.timedelta(days=days_later)
        return snap(
            moment,
            addresses={
                "mx.example.com [192.0.2.1]": AddressSnap(
                    "mx.example.com", "192.0.2.1", True, cert(left, sha, moment)
                ),
                # the other backend renewed on time: nothing is said about it
                "mx.example.com [192.0.2.2]": AddressSnap(
                    "mx.example.com", "192.0.2.2", True, cert(70, "cc" * 32, moment)
                ),
            },
        )

    _, found = run(
        at(0, 40), at(11, 29), at(12, 28), at(26, 13.5), at(33, 6.5), at(34, 80, "dd" * 32)
    )
    assert found[0] == []
    assert codes(found[1]) == [("certificate-expiring", "opened")]
    assert found[1][0].severity is Severity.WARNING
    assert found[1][0].subject == "mx.example.com [192.0.2.1]"
    assert found[2] == []  # still within the 30-day threshold: nothing new to say
    assert codes(found[3]) == [("certificate-expiring", "reminder")]
    assert codes(found[4]) == [("certificate-expiring", "reminder")]
    assert found[4][0].severity is Severity.ERROR
    assert codes(found[5]) == [
        ("certificate-changed", "changed"),
        ("certificate-expiring", "resolved"),
    ]


def test_error_findings_open_are_reminded_daily_and_resolve() -> None:
    broken = {"errors": {"certificate-expired|mx.example.com [192.0.2.1]": "expired 2 days ago"}}
    _, found = run(
        snap(**broken),
        snap(T0 + HOUR, **broken),
        snap(T0 + dt.timedelta(hours=25), **broken),
        snap(T0 + dt.timedelta(hours=26)),
    )
    assert codes(found[0]) == [("finding-opened", "opened")]
    assert found[0][0].subject == "certificate-expired mx.example.com [192.0.2.1]"
    assert found[1] == []
    assert codes(found[2]) == [("finding-opened", "reminder")]
    assert codes(found[3]) == [("finding-resolved", "resolved")]


def test_policy_unreachable_per_address_and_inconsistent() -> None:
    _, found = run(
        snap(),
        snap(
            T0 + HOUR,
            unreachable={"192.0.2.80": "sts-policy-fetch-error: connection refused"},
            inconsistent="2 addresses serve 2 answers",
        ),
        snap(T0 + 2 * HOUR),
    )
    assert codes(found[1]) == [
        ("policy-unreachable", "opened"),
        ("policy-inconsistent", "opened"),
    ]
    assert found[1][0].subject == "192.0.2.80"
    assert sorted(codes(found[2])) == [
        ("policy-inconsistent", "resolved"),
        ("policy-unreachable", "resolved"),
    ]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("none", "testing", ["partner-adopted"]),
        ("testing", "enforce", ["partner-adopted"]),
        ("enforce", "testing", ["partner-downgraded"]),
        ("broken", "enforce", ["partner-adopted"]),
        ("testing", "testing", []),
    ],
)
def test_partner_adoption(before: str, after: str, expected: list[str]) -> None:
    rules = Rules(PARTNER)
    _, (_, second) = run(snap(adoption=before), snap(T0 + HOUR, adoption=after), rules=rules)
    assert [str(e.code) for e in second] == expected


def test_a_partner_drop_is_confirmed_by_a_second_run_and_tlsrpt_changes_are_said() -> None:
    rules = Rules(PARTNER)
    _, found = run(
        snap(adoption="enforce"),
        snap(T0 + HOUR, adoption="none"),
        snap(T0 + 2 * HOUR, adoption="none"),
        snap(T0 + 3 * HOUR, adoption="none", tlsrpt=None),
        rules=rules,
    )
    assert found[1] == []
    assert [str(e.code) for e in found[2]] == ["partner-dropped"]
    assert [str(e.code) for e in found[3]] == ["partner-tlsrpt-changed"]
    assert found[3][0].after == "none"


def test_state_survives_json_round_trip() -> None:
    state, _ = run(
        snap(errors={"x|y": "z"}),
        snap(T0 + dt.timedelta(days=60), addresses={"a [1]": AddressSnap("a", "1", True, cert(5))}),
    )
    assert DomainState.from_dict(state.to_dict()) == state


def _day(days_ago: int, sender: str, ok: int, bad: int = 0, kind: str = "") -> DayStat:
    failures = ((kind, bad),) if bad else ()
    return DayStat(T0.date() - dt.timedelta(days=days_ago), sender, ok, bad, failures)


def test_report_events_new_failure_type_spike_silence_and_readiness() -> None:
    history = [_day(n, "google.com", 1000) for n in range(2, 20)]
    history += [_day(n, "microsoft.com", 500) for n in range(2, 20)]
    seen_before = DomainState(readiness="NOT READY")
    state, first = report_events(DOMAIN, history, ("NOT READY", "x"), seen_before, T0)
    assert first == []
    today = [
        *history,
        _day(1, "google.com", 900, 100, "certificate-expired"),
    ]
    state, second = report_events(DOMAIN, today, ("READY", "clean"), state, T0 + HOUR)
    assert sorted(str(e.code) for e in second) == [
        "failure-spike",
        "new-failure-type",
        "readiness-changed",
    ]
    new_type = next(e for e in second if e.code is EventCode.NEW_FAILURE_TYPE)
    assert new_type.subject == "google.com"
    assert new_type.after == "certificate-expired"
    ready = next(e for e in second if e.code is EventCode.READINESS_CHANGED)
    assert "you may switch to enforce now" in ready.message
    # said once: the same data on the next pass says nothing
    state, third = report_events(DOMAIN, today, ("READY", "clean"), state, T0 + 2 * HOUR)
    assert third == []
    # microsoft reported daily and stops: silent after 3 missed days, resolved when it returns
    later = T0 + dt.timedelta(days=4)
    quiet = [*today, _day(-3, "google.com", 1000)]
    state, silent = report_events(DOMAIN, quiet, ("READY", "clean"), state, later)
    assert [(str(e.code), str(e.status), e.subject) for e in silent] == [
        ("reporter-silent", "opened", "microsoft.com")
    ]
    back = [*quiet, _day(-3, "microsoft.com", 500)]
    state, resolved = report_events(DOMAIN, back, ("READY", "clean"), state, later + HOUR)
    assert [(str(e.code), str(e.status)) for e in resolved] == [("reporter-silent", "resolved")]


def test_the_first_look_at_a_store_reports_no_history_as_news() -> None:
    history = [_day(n, "google.com", 900, 100, "starttls-not-supported") for n in range(1, 5)]
    _, events = report_events(DOMAIN, history, ("NOT READY", "x"), DomainState(), T0, ReportRules())
    assert events == []


def test_event_json_round_trip() -> None:
    event = Event(
        EventCode.CERTIFICATE_EXPIRING,
        DOMAIN,
        "mx [1]",
        Severity.ERROR,
        T0,
        "m",
        EventStatus.REMINDER,
        "a",
        "b",
        T0 + HOUR,
    )
    assert Event.from_dict(event.to_dict()) == event


def test_every_event_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "watch.md").read_text()
    missing = [str(c) for c in EventCode if f"`{c}`" not in doc]
    assert missing == []


@given(st.text(max_size=300))
def test_partner_files_give_partners_or_one_line_problems(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("p") / "partners.txt"
    path.write_text(text, encoding="utf-8")
    partners, problems = read_partners(path)
    for problem in problems:
        assert "\n" not in problem
        assert str(path) in problem
    assert all(p.domain and " " not in p.domain for p in partners)


@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=True), st.booleans()))
def test_durations_parse_or_raise_config_error(value: object) -> None:
    try:
        result = duration(value, "interval")
    except ConfigError as exc:
        message = str(exc)
        assert "interval" in message
    else:
        assert result >= dt.timedelta(seconds=1)


@given(
    st.dictionaries(st.text(max_size=12), st.one_of(st.none(), st.text(max_size=8), st.integers()))
)
def test_lab_changes_from_json_are_changes_or_change_errors(raw: dict[str, object]) -> None:
    try:
        change = Change.from_dict({"domain": "good-enforce.example", **raw})
    except ChangeError as exc:
        message = str(exc)
        assert "\n" not in message
    else:
        assert Change.from_dict(change.to_dict()) == change


def test_channels_route_by_severity_domain_and_label() -> None:
    from mtasts.watch.config import Channel

    anything = Channel("all", "webhook", url="https://h.example/")
    errors_for_banks = Channel(
        "banks", "webhook", min_severity=Severity.ERROR, labels=("bank",), url="https://h.example/"
    )
    one_domain = Channel(
        "ours",
        "webhook",
        min_severity=Severity.WARNING,
        domains=("example.com",),
        url="https://h.example/",
    )
    assert anything.wants(Severity.INFO, "x.example", "")
    assert errors_for_banks.wants(Severity.ERROR, "bank.example", "bank")
    assert not errors_for_banks.wants(Severity.WARNING, "bank.example", "bank")
    assert not errors_for_banks.wants(Severity.ERROR, "shop.example", "shop")
    assert one_domain.wants(Severity.ERROR, "example.com", "")
    assert not one_domain.wants(Severity.INFO, "example.com", "")
    assert not one_domain.wants(Severity.ERROR, "example.net", "")


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ('smtp_port = "25"', "smtp_port"),
        ("https_port = 70000", "https_port"),
        ("timeout = 0", "timeout"),
        ("nameserver = 53", "nameserver"),
        ('interval = "soon"', "interval"),
        ("jitter = 1.5", "jitter"),
        ("expiry_days = [30, -1]", "expiry_days"),
    ],
)
def test_a_bad_watch_setting_is_one_line_naming_the_key(
    tmp_path_factory: pytest.TempPathFactory, line: str, names: str
) -> None:
    from mtasts.watch.config import load_watch

    path = tmp_path_factory.mktemp("c") / "mtasts.toml"
    path.write_text(f"[watch]\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load_watch(path, ("example.com",))
    message = str(error.value)
    assert names in message
    assert "\n" not in message
