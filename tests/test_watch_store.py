"""The watch tables on SQLite and on a real PostgreSQL: compact observations, the outbox,
channel health, retention, and report statistics read back from the report store."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from importlib import resources

from mtasts.check.facts import DomainFacts, TxtFacts
from mtasts.check.findings import Severity
from mtasts.check.judge import JudgeContext, judge
from mtasts.reports.store import open_store
from mtasts.watch.changes import DomainState
from mtasts.watch.events import Event, EventCode, EventStatus
from mtasts.watch.store import WatchStore

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def facts(at: dt.datetime, record: str = "v=STSv1; id=1;") -> DomainFacts:
    return DomainFacts(
        "example.com",
        at,
        TxtFacts(((record,),)),
        TxtFacts((("v=TLSRPTv1; rua=mailto:t@example.com",),)),
        mx_error="MX example.com: no answer within 1 s",
    )


def event(at: dt.datetime, code: EventCode = EventCode.MX_CHANGED) -> Event:
    return Event(code, "example.com", "example.com", Severity.WARNING, at, f"{code} at {at}")


def test_observations_are_compact_and_the_outbox_keeps_what_a_channel_refused(
    db_url: str,
) -> None:
    store = WatchStore(open_store(db_url).engine)
    store.sync_domains([("example.com", "own", ""), ("partner.example", "partner", "bank")])
    for n in range(3):  # the same deployment three times: one row, three runs
        check = judge(facts(T0 + n * HOUR), JudgeContext(now=T0))
        store.record(check, DomainState(), [], {}, T0 + (n + 1) * HOUR)
    changed = judge(facts(T0 + 3 * HOUR, "v=STSv1; id=2;"), JudgeContext(now=T0))
    first, second = event(T0 + 3 * HOUR), event(T0 + 3 * HOUR, EventCode.POLICY_ID_CHANGED)
    store.record(changed, DomainState(), [first, second], {0: ["hook"], 1: ["hook", "mail"]}, T0)
    rows = store.observations("example.com")
    assert [(r.runs, r.first_seen, r.last_seen) for r in rows] == [
        (3, T0, T0 + 2 * HOUR),
        (1, T0 + 3 * HOUR, T0 + 3 * HOUR),
    ]
    assert rows[1].facts == changed.facts  # the stored facts read back exactly
    assert store.storage()["runs"] == 4
    watched = {w.domain: w for w in store.watched()}
    assert watched["partner.example"].label == "bank"
    assert watched["example.com"].next_due == T0

    now = T0 + 4 * HOUR
    pending = store.pending("hook", now)
    assert [p.event for p in pending] == [first, second]
    store.failed("hook", pending, "hook: answered 503", now, dt.timedelta(minutes=1))
    assert store.pending("hook", now) == []  # waiting for its back-off
    later = now + dt.timedelta(minutes=2)
    retry = store.pending("hook", later)
    assert [p.attempts for p in retry] == [1, 1]
    store.delivered("hook", [p.outbox_id for p in retry], later)
    health = {h.name: h for h in store.channels(["hook", "mail"])}
    assert (health["hook"].sent, health["hook"].failed, health["hook"].pending) == (2, 1, 0)
    assert health["hook"].last_error == "hook: answered 503"
    assert health["hook"].last_success == later
    assert health["mail"].pending == 1

    # Retention: old observations go, each domain's latest stays; undelivered events stay.
    removed = store.prune(T0 + dt.timedelta(days=30))
    assert removed["observations"] == 1
    assert removed["events"] == 1  # the first is delivered; the second still waits for "mail"
    assert store.events() == [second]
    assert [r.runs for r in store.observations("example.com")] == [1]
    store.delivered("mail", [p.outbox_id for p in store.pending("mail", later)], later)
    assert store.prune(T0 + dt.timedelta(days=30))["events"] == 1
    assert store.events() == []

    # A domain no longer configured leaves the watched set; its history stays readable.
    store.sync_domains([("partner.example", "partner", "bank")])
    assert [w.domain for w in store.watched()] == ["partner.example"]
    assert len(store.observations("example.com")) == 1


def test_state_is_stored_with_the_run(db_url: str) -> None:
    store = WatchStore(open_store(db_url).engine)
    store.sync_domains([("example.com", "own", "")])
    state = DomainState(absent_runs=1, readiness="READY", announced={"google.com|x": "2026-12-01"})
    reminder = replace(event(T0), status=EventStatus.REMINDER)
    store.record(judge(facts(T0), JudgeContext(now=T0)), state, [reminder], {}, T0 + HOUR)
    (watched,) = store.watched()
    assert watched.state == state
    assert watched.last_run == T0
    assert store.events(domain="example.com") == [reminder]
    assert store.events(since=T0 + HOUR) == []


def test_day_stats_read_the_reports_in_the_store(db_url: str) -> None:
    reports = open_store(db_url)
    example = resources.files("mtasts.examples").joinpath("report.json").read_bytes()
    assert reports.ingest(example, "report.json").outcome == "stored"
    store = WatchStore(reports.engine)
    stats = store.day_stats("example.com", dt.date(2026, 5, 1))
    assert len(stats) == 1
    (day,) = stats
    assert day.day == dt.date(2026, 5, 20)
    assert day.successful > 0
    assert sum(n for _, n in day.failures) == day.failed
    assert store.day_stats("example.com", dt.date(2026, 5, 21)) == []
