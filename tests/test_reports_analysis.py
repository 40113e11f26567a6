"""``mtasts reports summary`` and ``readiness``: the verdict the seed article asks for."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mtasts.reports.analysis import readiness, summary
from mtasts.reports.provenance import Channel
from mtasts.reports.store import open_store

from .conftest import MTASTS


def stored_report(
    sender: str,
    domain: str,
    *,
    ok: int = 100,
    failures: list[tuple[str, int]] | None = None,
    day: dt.date | None = None,
    report_id: str | None = None,
) -> bytes:
    start = dt.datetime.combine(
        day or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1), dt.time(), dt.UTC
    )
    details = [
        {
            "result-type": kind,
            "sending-mta-ip": "192.0.2.1",
            "receiving-mx-hostname": f"mx.{domain}",
            "receiving-ip": "198.51.100.7",
            "failed-session-count": count,
        }
        for kind, count in failures or []
    ]
    doc: dict[str, Any] = {
        "organization-name": sender,
        "date-range": {
            "start-datetime": start.isoformat(),
            "end-datetime": (start + dt.timedelta(hours=23, minutes=59)).isoformat(),
        },
        "contact-info": f"tlsrpt@{sender}",
        "report-id": report_id or f"{sender}-{domain}-{start:%Y%m%d}",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": [
                        "version: STSv1",
                        "mode: testing",
                        f"mx: mx.{domain}",
                        "max_age: 86400",
                    ],
                    "policy-domain": domain,
                    "mx-host": [f"mx.{domain}"],
                },
                "summary": {
                    "total-successful-session-count": ok,
                    "total-failure-session-count": sum(c for _, c in failures or []),
                },
                "failure-details": details,
            }
        ],
    }
    return json.dumps(doc).encode()


def store_at(tmp_path: Path) -> Any:
    return open_store(f"sqlite:///{tmp_path / 'r.sqlite'}")


def test_clean_reports_from_the_large_senders_are_ready(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.ingest(stored_report("google.com", "example.com", ok=900), "t")
    store.ingest(stored_report("microsoft.com", "example.com", ok=300), "t")
    # Files prove nothing about their sender: READY only once the admin trusts the channel.
    unproven = readiness(store, "example.com")
    assert unproven.verdict == "UNKNOWN"
    assert unproven.reason.startswith(
        "the reports claiming to be from google.com, microsoft.com are not authenticated"
    )
    verdict = readiness(store, "example.com", trusted=frozenset({Channel.FILE}))
    assert verdict.verdict == "READY"
    assert verdict.sessions == 1200
    assert verdict.vouched == ["google.com", "microsoft.com"]
    each = readiness(
        store,
        "example.com",
        trusted=frozenset({Channel.FILE}),
        large_senders=("google.com", "yahoo.com"),
        require_all=True,
    )
    assert each.verdict == "UNKNOWN"
    assert (
        each.reason == "no report from the largest senders (yahoo.com) in 14 days: too little data"
    )


def test_negotiation_failures_are_what_enforce_would_defer(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.ingest(
        stored_report("google.com", "example.com", failures=[("certificate-host-mismatch", 42)]),
        "t",
    )
    store.ingest(
        stored_report("microsoft.com", "example.com", failures=[("sts-policy-fetch-error", 5)]), "t"
    )
    verdict = readiness(store, "example.com")
    assert verdict.verdict == "NOT READY"
    assert verdict.reason == "enforce would have deferred 42 of 247 sessions"
    (deferred,) = verdict.would_defer
    assert (deferred.submitter, deferred.result_type, deferred.receiving_mx, deferred.sessions) == (
        "google.com",
        "certificate-host-mismatch",
        "mx.example.com",
        42,
    )
    assert deferred.explained_by == "mtasts check: certificate-host-mismatch"
    assert [g.result_type for g in verdict.unaffected] == ["sts-policy-fetch-error"]


def test_too_little_data_is_said_so(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    assert (
        readiness(store, "example.com").reason
        == "no TLS-RPT reports for example.com in the last 14 days"
    )
    store.ingest(stored_report("small-isp.example", "example.com"), "t")
    assert readiness(store, "example.com").verdict == "UNKNOWN"
    old = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=40)
    store.ingest(
        stored_report(
            "google.com", "example.com", day=old, failures=[("starttls-not-supported", 3)]
        ),
        "t",
    )
    assert readiness(store, "example.com").verdict == "UNKNOWN"  # outside the window


def test_cli_summary_json_csv_and_readiness_exit_status(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    store = open_store(db)
    store.ingest(
        stored_report("google.com", "example.com", failures=[("certificate-expired", 7)]), "t"
    )
    env = {**os.environ, "NO_COLOR": "1"}
    out = subprocess.run(
        [MTASTS, "reports", "summary", "--db", db, "--json", "--csv", str(tmp_path / "s.csv")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    rows = json.loads(out.stdout)
    assert rows[0]["failures"] == {"certificate-expired": 7}
    with (tmp_path / "s.csv").open(newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == [
        "day",
        "submitter",
        "domain",
        "policy_type",
        "successful",
        "failed",
        "failures",
    ]
    assert table[1][1:] == ["google.com", "example.com", "sts", "100", "7", "certificate-expired=7"]
    assert table[1][0] == rows[0]["day"]
    verdict = subprocess.run(
        [MTASTS, "reports", "readiness", "example.com", "--db", db],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert verdict.returncode == 1
    assert (
        "NOT READY: example.com, last 14 days: enforce would have deferred 7 of 107 sessions"
        in verdict.stdout
    )
    assert len(summary(store, "example.com")) == 1


def test_clean_window_counts_back_to_the_last_deferrable_failure(tmp_path: Path) -> None:
    from mtasts.reports.analysis import clean_window_days

    store = store_at(tmp_path)
    today = dt.date(2026, 6, 30)
    assert clean_window_days(store, "example.com", today=today) is None
    for back in range(1, 11):
        failures = [("certificate-expired", 3)] if back == 6 else None
        store.ingest(
            stored_report(
                "google.com", "example.com", day=today - dt.timedelta(days=back), failures=failures
            ),
            "t",
        )
    assert clean_window_days(store, "example.com", today=today) == 5


def test_max_age_warns_when_it_outlives_the_clean_window(tmp_path: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "MTASTS_DB": f"sqlite:///{tmp_path / 'r.sqlite'}"}
    subprocess.run(
        [MTASTS, "init", "example.com", "--mx", "mx.example.com", "--mode", "enforce", "--force"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    store = open_store(env["MTASTS_DB"])
    today = dt.datetime.now(dt.UTC).date()
    for back in range(1, 4):
        store.ingest(
            stored_report("google.com", "example.com", day=today - dt.timedelta(days=back)), "t"
        )
    result = subprocess.run(
        [MTASTS, "max-age", "example.com", "604800"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert (
        "warning: 7 days is longer than the 3 days of clean TLS-RPT reports so far" in result.stderr
    )


def test_summary_by_mx_and_address(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    store = open_store(db)
    store.ingest(
        stored_report(
            "google.com",
            "example.com",
            failures=[("certificate-host-mismatch", 9), ("starttls-not-supported", 2)],
        ),
        "t",
    )
    env = {**os.environ, "NO_COLOR": "1"}
    out = subprocess.run(
        [
            MTASTS,
            "reports",
            "summary",
            "--by",
            "mx",
            "--db",
            db,
            "--json",
            "--csv",
            str(tmp_path / "mx.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    rows = json.loads(out.stdout)
    assert [
        (r["receiving_mx"], r["receiving_ip"], r["result_type"], r["sessions"]) for r in rows
    ] == [
        ("mx.example.com", "198.51.100.7", "certificate-host-mismatch", 9),
        ("mx.example.com", "198.51.100.7", "starttls-not-supported", 2),
    ]
    with (tmp_path / "mx.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle)) == [{k: str(v) for k, v in r.items()} for r in rows]
    table = subprocess.run(
        [MTASTS, "reports", "summary", "--by", "mx", "--db", db],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "failed TLS sessions by MX" in table.stdout


def test_summary_by_domain_and_readiness_of_every_domain(tmp_path: Path) -> None:
    """Watching over weeks from the command line: one line per domain with its trend, and
    every domain judged in one call."""
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    store = open_store(db)
    today = dt.datetime.now(dt.UTC).date()
    for back in range(1, 29):  # four weeks: this fortnight against the one before
        day = today - dt.timedelta(days=back)
        worse = back <= 14
        store.ingest(
            stored_report(
                "google.com",
                "a.example",
                ok=90 if worse else 95,
                day=day,
                failures=[("certificate-expired", 10 if worse else 5)],
            ),
            "t",
        )
        store.ingest(stored_report("google.com", "b.example", ok=100, day=day), "t")
    env = {**os.environ, "NO_COLOR": "1"}

    def reports(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MTASTS, "reports", *args, "--db", db],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    rows = {
        r["domain"]: r
        for r in json.loads(reports("summary", "--by", "domain", "--since", "14d", "--json").stdout)
    }
    assert rows["a.example"]["sessions"] == 1400
    assert rows["a.example"]["failed"] == 140
    assert rows["a.example"]["top_failure"] == "certificate-expired"
    assert rows["a.example"]["trend"] == "+5.0 pts"
    assert rows["b.example"]["trend"] == "same"
    table = reports("summary", "--by", "domain", "--since", "14d").stdout
    assert "a.example" in table
    assert "+5.0 pts" in table
    every = reports("readiness", "--trust", "file")
    assert every.returncode == 1
    assert "a.example: NOT READY: enforce would have deferred 140 of 1400 sessions" in every.stdout
    assert "b.example: READY:" in every.stdout
    both = json.loads(reports("readiness", "--trust", "file", "--json").stdout)
    assert [v["verdict"] for v in both] == ["NOT READY", "READY"]


def test_readiness_of_every_domain_at_once_is_each_domains_readiness(tmp_path: Path) -> None:
    """The dashboard's bulk judgement gives exactly what `readiness` gives per domain."""
    from mtasts.reports.analysis import readiness_many

    store = open_store(f"sqlite:///{tmp_path / 'r.sqlite'}")
    today = dt.datetime.now(dt.UTC).date()
    for back in range(1, 20):
        day = today - dt.timedelta(days=back)
        store.ingest(
            stored_report(
                "google.com", "a.example", ok=90, day=day, failures=[("certificate-expired", 3)]
            ),
            "t",
            channel=Channel.IMAP,
        )
        store.ingest(stored_report("microsoft.com", "b.example", ok=100, day=day), "t")
        store.ingest(
            stored_report(
                "yahoo.com", "c.example", ok=50, day=day, failures=[("sts-policy-invalid", 1)]
            ),
            "t",
        )
    many = readiness_many(store, 14, today, trusted=frozenset({Channel.IMAP}))
    assert sorted(many) == ["a.example", "b.example", "c.example"]
    for domain, verdict in many.items():
        one = readiness(store, domain, 14, today, trusted=frozenset({Channel.IMAP}))
        assert verdict.to_dict() == one.to_dict()
    assert many["a.example"].failed == 14 * 3
    assert str(many["a.example"].verdict) == "NOT READY"
