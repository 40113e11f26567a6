"""Postfix's log read into sessions: time stamps, connection reuse, journald entries."""

from __future__ import annotations

import datetime as dt

from mtasts.reporter.follow import Joiner, JournalFollower
from mtasts.reporter.join import join
from mtasts.reporter.postfix_log import PostfixLogReader

TLS = "postfix/smtp[{p}]: Verified TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3 with cipher X"
SENT = (
    "postfix/smtp[{p}]: {q}: to=<x@a.example>, relay=mx.a.example[192.0.2.1]:25, {extra}"
    "delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 ok)"
)


def test_a_december_line_read_in_january_is_last_year() -> None:
    reader = PostfixLogReader(zone=dt.UTC)
    now = dt.datetime(2027, 1, 1, 0, 5, tzinfo=dt.UTC)
    reader.feed("Dec 31 23:59:58 h " + TLS.format(p=1), now)
    found = reader.feed("Dec 31 23:59:59 h " + SENT.format(p=1, q="AB12", extra=""), now)
    assert found is not None
    assert found.at == dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


def test_rfc3339_stamps_and_a_cached_connection_count_once() -> None:
    reader = PostfixLogReader()
    stamp = "2026-12-06T07:27:36.123456+01:00 host "
    reader.feed(stamp + TLS.format(p=7))
    first = reader.feed(stamp + SENT.format(p=7, q="AB12", extra=""))
    assert first is not None
    assert first.tls == "Verified"
    assert first.at == dt.datetime(2026, 12, 6, 6, 27, 36, 123456, tzinfo=dt.UTC)
    # The next queue file over the same (cached) connection: the same TLS session.
    assert reader.feed(stamp + SENT.format(p=7, q="CD34", extra="conn_use=2, ")) is None
    # A new connection without TLS is a session of its own, in plaintext.
    plain = reader.feed(stamp + SENT.format(p=7, q="EF56", extra=""))
    assert plain is not None
    assert plain.tls is None
    detail = join(plain, None).policies[0].details[0]
    assert (detail.result_type, detail.failure_reason_code) == (
        "starttls-not-supported",
        "delivered without TLS",
    )


def test_lines_that_are_not_postfix_smtp_are_ignored() -> None:
    reader = PostfixLogReader()
    for line in (
        "",
        "garbage",
        "Dec 06 07:27:36 host sshd[1]: Accepted publickey",
        "Dec 06 07:27:36 host postfix/local[9]: AB12: to=<x@local>, relay=local, status=sent (x)",
        "Foo 99 07:27:36 host postfix/smtp[1]: x",
    ):
        assert reader.feed(line) is None


async def _journal_sessions() -> list[object]:
    follower = JournalFollower.__new__(JournalFollower)
    follower.reader = PostfixLogReader()
    stamp = str(int(dt.datetime(2026, 12, 6, 7, tzinfo=dt.UTC).timestamp() * 1e6))
    entries = [
        {
            "SYSLOG_IDENTIFIER": "postfix/smtp",
            "SYSLOG_PID": "5",
            "__REALTIME_TIMESTAMP": stamp,
            "MESSAGE": TLS.format(p=5).split(": ", 1)[1],
        },
        {
            "SYSLOG_IDENTIFIER": "postfix/smtp",
            "SYSLOG_PID": "5",
            "__REALTIME_TIMESTAMP": stamp,
            "MESSAGE": SENT.format(p=5, q="AB12", extra="").split(": ", 1)[1],
        },
        {"SYSLOG_IDENTIFIER": "sshd", "MESSAGE": "x"},
    ]
    logged = [s for s in (follower.feed_entry(e) for e in entries) if s is not None]
    return await Joiner(None, frozenset(), confirm=False).sessions(logged)  # type: ignore[arg-type]


def test_journald_entries_give_the_same_sessions() -> None:
    import asyncio

    ((at, session),) = asyncio.run(_journal_sessions())  # type: ignore[misc]
    assert at == dt.datetime(2026, 12, 6, 7, tzinfo=dt.UTC)
    assert session.policies[0].policy.policy_type == "no-policy-found"
    assert not session.policies[0].failed
