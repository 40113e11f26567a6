"""The reporter's storage on SQLite and PostgreSQL: the same upserts, the same answers."""

from __future__ import annotations

import datetime as dt
import gzip
import json

from mtasts.reporter.store import ReporterStore
from mtasts.reports.store import open_store
from mtasts.tlsrpt.datagram import parse_datagram

DAY = dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)


def _session(
    domain: str, failed: bool, record: str = "v=TLSRPTv1;rua=mailto:r@x.example"
) -> object:
    policy: dict[str, object] = {
        "policy-type": 2,
        "policy-domain": domain,
        "f": int(failed),
        "policy-string": ["version: STSv1", "mode: enforce"],
    }
    if failed:
        policy["failure-details"] = [{"c": 204, "n": f"mx.{domain}", "r": "192.0.2.9"}]
    raw = {"dpv": "1", "d": domain, "pr": record, "policies": [policy]}
    return parse_datagram(json.dumps(raw).encode())


def test_tallies_add_up_across_batches_and_reports_are_built_once(db_url: str) -> None:
    store = ReporterStore(open_store(db_url).engine)
    ok, bad = _session("a.example", False), _session("a.example", True)
    store.add_sessions([(DAY, ok), (DAY, bad)], counts=[40, 2], source="socket:x", received=42)
    store.add_sessions(
        [(DAY, ok), (DAY, bad), (DAY, _session("b.example", False))],
        source="socket:x",
        received=3,
        malformed=1,
        last_error="malformed datagram: x",
    )
    store.add_sessions([], source="log:/var/log/mail.log", position={"inode": 7, "offset": 99})
    assert store.position("log:/var/log/mail.log") == {"inode": 7, "offset": 99}
    (intake,) = [i for i in store.intake() if i.source == "socket:x"]
    assert (intake.received, intake.sessions, intake.malformed) == (45, 45, 1)
    pending = {p.policy_domain: p for p in store.unreported(dt.date(2026, 12, 6))}
    assert pending["a.example"].sessions == 44
    (tally,) = store.tallies(pending["a.example"])
    assert (tally.successful, tally.failed) == (41, 3)
    (detail,) = tally.details
    assert (detail.result_type, detail.failed_session_count) == ("certificate-expired", 3)
    now = dt.datetime(2026, 12, 6, 1, tzinfo=dt.UTC)
    first = store.create_report(
        pending["a.example"],
        "rid-a",
        gzip.compress(b"{}"),
        first_attempt=now,
        now=now,
        retry_for=dt.timedelta(hours=24),
    )
    again = store.create_report(
        pending["a.example"],
        "rid-a",
        gzip.compress(b"{}"),
        first_attempt=now,
        now=now,
        retry_for=dt.timedelta(hours=24),
    )
    assert first.id == again.id
    assert [p.policy_domain for p in store.unreported(dt.date(2026, 12, 6))] == ["b.example"]
    (due,) = store.due(now)
    assert due.record == "v=TLSRPTv1;rua=mailto:r@x.example"
    state = store.record_attempt(
        due,
        {"mailto:r@x.example": "relay refused", "https://r.example/t": "answered 500"},
        now=now,
        next_attempt=now + dt.timedelta(minutes=10),
        suppress_after=1,
        suppress_for=dt.timedelta(hours=24),
    )
    assert state == "pending"
    assert store.suppressed(["https://r.example/t", "mailto:other@x.example"], now) == {
        "https://r.example/t"
    }
    assert store.due(now) == []  # waits for its retry
    later = now + dt.timedelta(minutes=10)
    (retry,) = store.due(later)
    assert (
        store.record_attempt(
            retry,
            {"mailto:r@x.example": None},
            now=later,
            next_attempt=later,
            suppress_after=5,
            suppress_for=dt.timedelta(hours=1),
        )
        == "sent"
    )
    assert store.accepted_uris(retry.id) == {"mailto:r@x.example"}
    (day,) = store.status(dt.date(2026, 12, 1))
    assert (day.domains, day.sessions, day.failed_sessions, day.sent, day.pending) == (
        2,
        45,
        3,
        1,
        0,
    )


def test_a_report_past_its_24_hours_is_given_up(db_url: str) -> None:
    store = ReporterStore(open_store(db_url).engine)
    store.add_sessions([(DAY, _session("c.example", True))], source="t")
    (pending,) = store.unreported(dt.date(2026, 12, 6))
    now = dt.datetime(2026, 12, 6, 1, tzinfo=dt.UTC)
    report = store.create_report(
        pending, "rid-c", b"x", first_attempt=now, now=now, retry_for=dt.timedelta(hours=24)
    )
    state = store.record_attempt(
        report,
        {"https://r.example/t": "timeout"},
        now=now,
        next_attempt=now + dt.timedelta(hours=25),
        suppress_after=5,
        suppress_for=dt.timedelta(hours=1),
    )
    assert state == "failed"
    (day,) = store.status(dt.date(2026, 12, 1))
    assert (day.failed, day.last_error) == (1, "timeout")


def test_the_resolver_answer_log_keeps_changes_only(tmp_path: object) -> None:
    from pathlib import Path

    from mtasts.resolver.answers import AnswerLog

    path = Path(str(tmp_path)) / "cache.sqlite"
    log = AnswerLog(path)
    policy = "version: STSv1\nmode: enforce\nmx: mx.a.example\nmax_age: 86400\n"
    assert log.record("a.example", 100.0, "policy", "id1", policy, "")
    assert not log.record("a.example", 200.0, "policy", "id1", policy, "fetched again")
    assert log.record("a.example", 300.0, "sts-policy-fetch-error", None, None, "timeout")
    assert log.record("a.example", 400.0, "policy", "id2", policy, "")
    reader = AnswerLog(path, readonly=True)
    assert reader.at("a.example", 50.0) is None
    assert reader.at("a.example", 250.0).policy_id == "id1"  # type: ignore[union-attr]
    failed = reader.at("a.example", 350.0)
    assert failed is not None
    assert (failed.kind, failed.reason) == (
        "sts-policy-fetch-error",
        "timeout",
    )
    # Syslog stamps are whole seconds: an answer made 0.4 s "after" the logged second applies.
    assert reader.at("a.example", 399.6).policy_id == "id2"  # type: ignore[union-attr]


def test_pruning_the_answer_log_keeps_each_domain_s_answer_in_force(tmp_path: object) -> None:
    from pathlib import Path

    from mtasts.resolver.answers import AnswerLog

    log = AnswerLog(Path(str(tmp_path)) / "answers.sqlite")
    for at, kind in ((100.0, "none"), (200.0, "policy"), (900.0, "none")):
        log.record("a.example", at, kind, "id1" if kind == "policy" else None, "p", "")
    log.record("b.example", 100.0, "policy", "id1", "p", "")  # old, but still in force
    assert log.prune(before=500.0) == 2
    assert log.at("a.example", 250.0) is None
    assert log.at("a.example", 950.0).kind == "none"  # type: ignore[union-attr]
    assert log.at("b.example", 950.0).policy_id == "id1"  # type: ignore[union-attr]
    assert log.prune(before=500.0) == 0


def test_head_revision_is_the_newest_migration() -> None:
    """The store skips alembic when already at HEAD_REVISION: it must be the newest file's."""
    import re
    from importlib import resources

    from mtasts.reports.store import HEAD_REVISION

    folder = resources.files("mtasts.reports") / "migrations" / "versions"
    revisions = sorted(
        re.search(r'^revision = "(\w+)"', f.read_text(), re.M)[1]  # type: ignore[index]
        for f in folder.iterdir()
        if f.name[0].isdigit()
    )
    assert revisions[-1] == HEAD_REVISION


def test_a_whole_day_is_read_and_stored_in_batches(db_url: str) -> None:
    store = ReporterStore(open_store(db_url).engine)
    sessions = [(DAY, _session(f"d{i}.example", i % 3 == 0)) for i in range(30)]
    store.add_sessions(sessions, counts=[2] * 30, source="t")
    pending = store.unreported(dt.date(2026, 12, 6))
    by_day = store.day_tallies(DAY.date())
    assert len(by_day) == 30
    for p in pending:  # the same tallies as one query pair per report gave
        assert sorted(by_day[(p.policy_domain, p.record_key)], key=repr) == sorted(
            store.tallies(p), key=repr
        )
    now = dt.datetime(2026, 12, 6, 1, tzinfo=dt.UTC)
    items = [(p, f"rid-{p.policy_domain}", b"x", now) for p in pending]
    assert store.create_reports(items, now=now, retry_for=dt.timedelta(hours=24)) == 30
    assert store.create_reports(items, now=now, retry_for=dt.timedelta(hours=24)) == 0
    assert store.unreported(dt.date(2026, 12, 6)) == []


def test_the_migrations_build_the_schema_the_models_declare(db_url: str) -> None:
    """Each migration is written by hand beside a model change: alembic's own comparison
    of the migrated database with the models must find nothing to add, drop or alter."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import mtasts.reporter.models
    import mtasts.scan.models
    import mtasts.watch.models  # noqa: F401  (every table shares the reports' metadata)
    from mtasts.reports.models import Base

    store = open_store(db_url)
    store.migrate()
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
