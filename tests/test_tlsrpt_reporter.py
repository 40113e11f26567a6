"""``mtasts tlsrpt``: the datagram socket, the Postfix log follower, sending, status, dkim-key,
driven through the CLI as an MTA's postmaster would."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mtasts.lab.ca import LabCA, Validity

from .conftest import MTASTS, port, wait_for_port

HTTPS_PORT = port(49)
DEAD_DNS = port(50)  # nothing answers here: the rua lookup fails, the datagram's record is used
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MTASTS, *args], capture_output=True, text=True, timeout=120, env=ENV, cwd=cwd
    )


def status(db: str) -> dict[str, object]:
    done = run("tlsrpt", "status", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def datagram(domain: str, failed: bool, record: str) -> bytes:
    policy: dict[str, object] = {
        "policy-type": 2,
        "policy-domain": domain,
        "policy-string": ["version: STSv1", "mode: testing", f"mx: mx.{domain}", "max_age: 86400"],
        "mx-host": [f"mx.{domain}"],
        "t": int(failed),
        "f": int(failed),
    }
    if failed:
        policy["failure-details"] = [
            {"c": 202, "n": f"mx.{domain}", "r": "192.0.2.25", "f": "hostname mismatch"}
        ]
    raw = {"dpv": "1", "d": domain, "pr": record, "policies": [policy]}
    return json.dumps(raw, separators=(",", ":")).encode()


def start_collector(tmp_path: Path, db: str) -> tuple[subprocess.Popen[bytes], Path]:
    sock = tmp_path / "run" / "tlsrpt.sock"
    process = subprocess.Popen(
        [
            MTASTS,
            "tlsrpt",
            "collect",
            "--socket",
            str(sock),
            "--db",
            db,
            "--config",
            str(tmp_path / "mtasts.toml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the collector did not create its socket"
        time.sleep(0.05)
    return process, sock


def test_a_burst_of_100000_datagrams_is_counted_and_malformed_ones_skipped(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    (tmp_path / "mtasts.toml").write_text(f'[tlsrpt]\nkeep_malformed = "{tmp_path / "bad"}"\n')
    process, path = start_collector(tmp_path, db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660  # never world-writable
    record = "v=TLSRPTv1;rua=mailto:tlsrpt@a.example"
    good = [datagram("a.example", False, record), datagram("b.example", True, record)]
    bad = [b'{"dpv":"1","d":"caf\xe9"}', good[0][:40], b"{}", b"x" * 200_000]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.connect(str(path))
        for i in range(100_000):
            client.send(good[i % 2])  # blocking: a full buffer waits instead of dropping
        for data in bad:
            client.send(data)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    found = status(db)
    (day,) = found["days"]  # type: ignore[misc]
    assert (day["domains"], day["sessions"], day["failed_sessions"]) == (2, 100_000, 50_000)
    (intake,) = found["intake"]  # type: ignore[misc]
    assert (intake["received"], intake["sessions"], intake["malformed"]) == (100_004, 100_000, 4)
    assert "malformed datagram" in intake["last_error"]
    assert len(list((tmp_path / "bad").iterdir())) == 4  # kept for inspection


# Lines of the real Postfix 3.7.11 in the lab (the Postfix integration test), one process each.
LOG_A = """\
Dec 06 07:27:35 sender postfix/qmgr[20362]: EC89A24A302: from=<alice@sender.example>, size=307, nrcpt=1 (queue active)
Dec 06 07:27:35 sender postfix/qmgr[20362]: EF85624A308: from=<alice@sender.example>, size=313, nrcpt=1 (queue active)
Dec 06 07:27:36 sender postfix/smtp[20371]: Verified TLS connection established to mx.pf-good.example[127.77.1.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 06 07:27:36 sender postfix/smtp[20371]: EC89A24A302: to=<bob@pf-good.example>, relay=mx.pf-good.example[127.77.1.1]:25, delay=0.12, delays=0.02/0.04/0.06/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)
Dec 06 07:27:36 sender postfix/smtp[20371]: EC89A24A302: to=<carol@pf-good.example>, relay=mx.pf-good.example[127.77.1.1]:25, delay=0.12, delays=0.02/0.04/0.06/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)
Dec 06 07:27:36 sender postfix/smtp[20376]: server certificate verification failed for mx.pf-badcert.example[127.77.1.2]:25: num=62:hostname mismatch
Dec 06 07:27:36 sender postfix/smtp[20376]: Untrusted TLS connection established to mx.pf-badcert.example[127.77.1.2]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
"""
# The delivery line of process 20376 comes after the first collect stopped.
LOG_B = """\
Dec 06 07:27:36 sender postfix/smtp[20376]: EF85624A308: to=<bob@pf-badcert.example>, relay=mx.pf-badcert.example[127.77.1.2]:25, delay=0.11, delays=0.01/0.05/0.05/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 06 07:27:36 sender postfix/smtp[20378]: F1EEB24A303: to=<bob@pf-stripped.example>, relay=mx.pf-stripped.example[127.77.1.3]:25, delay=0.1, delays=0/0.06/0.04/0, dsn=4.7.4, status=deferred (TLS is required, but was not offered by host mx.pf-stripped.example[127.77.1.3])
Dec 06 07:27:37 sender postfix/smtp[20379]: 0B1C2D3E4F: to=<bob@down.example>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.down.example[192.0.2.1]:25: Connection refused)
"""
# After rotation: a report mail of our own (not counted) and one more session.
LOG_C = """\
Dec 06 07:40:01 sender postfix/qmgr[20362]: 1A2B3C4D5E: from=<noreply-tlsrpt@sender.example>, size=3000, nrcpt=1 (queue active)
Dec 06 07:40:01 sender postfix/smtp[20390]: Untrusted TLS connection established to mx.pf-badcert.example[127.77.1.2]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 06 07:40:01 sender postfix/smtp[20390]: 1A2B3C4D5E: to=<tlsrpt@pf-badcert.example>, relay=mx.pf-badcert.example[127.77.1.2]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)
Dec 06 07:40:02 sender postfix/smtp[20391]: Verified TLS connection established to mx.pf-good.example[127.77.1.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
Dec 06 07:40:02 sender postfix/smtp[20391]: 6A7B8C9D0E: to=<dave@pf-good.example>, relay=mx.pf-good.example[127.77.1.1]:25, delay=0.1, delays=0/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)
"""


def test_the_log_follower_survives_restarts_and_rotation_without_losing_or_doubling(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    (tmp_path / "mtasts.toml").write_text(
        '[tlsrpt]\norganization = "Sender Example"\ncontact = "mailto:postmaster@sender.example"\n'
        "confirm = false\n"
    )
    log = tmp_path / "maillog"
    log.write_text(LOG_A)

    def collect() -> dict[str, int]:
        done = run(
            "tlsrpt",
            "collect",
            "--log",
            str(log),
            "--once",
            "--db",
            db,
            "--json",
            "--config",
            str(tmp_path / "mtasts.toml"),
            "--answers",
            str(tmp_path / "none"),
        )
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    assert collect()["sessions"] == 1  # pf-good: two recipients over one connection, one session
    with log.open("a") as handle:
        handle.write(LOG_B)
    assert collect()["sessions"] == 2  # badcert (its TLS lines were read before) + stripped
    assert collect()["sessions"] == 0  # nothing new: nothing counted twice
    log.rename(tmp_path / "maillog.1")
    with (tmp_path / "maillog.1").open("a") as handle:  # written just before the rotation
        handle.write(LOG_C.splitlines(keepends=True)[0])
    log.write_text("".join(LOG_C.splitlines(keepends=True)[1:]))
    assert collect()["sessions"] == 1  # our own report mail is not counted (RFC 8460 §3)
    assert status(db)["intake"][0]["sessions"] == 4  # type: ignore[index]
    out = tmp_path / "dry"
    day = f"{dt.datetime.now(dt.UTC).year}-12-06"
    done = run(
        "tlsrpt",
        "send",
        "--dry-run",
        "--out",
        str(out),
        "--day",
        day,
        "--db",
        db,
        "--config",
        str(tmp_path / "mtasts.toml"),
    )
    assert done.returncode == 0, done.stderr
    reports = {
        json.loads(p.read_text())["policies"][0]["policy"]["policy-domain"]: json.loads(
            p.read_text()
        )
        for p in out.glob("*.json")
    }
    assert set(reports) == {"pf-good.example", "pf-badcert.example", "pf-stripped.example"}
    good = reports["pf-good.example"]["policies"][0]
    assert good["policy"]["policy-type"] == "no-policy-found"  # no resolver answers here
    assert good["summary"] == {
        "total-successful-session-count": 2,
        "total-failure-session-count": 0,
    }
    bad = reports["pf-badcert.example"]["policies"][0]
    assert bad["failure-details"] == [
        {
            "result-type": "certificate-host-mismatch",
            "receiving-mx-hostname": "mx.pf-badcert.example",
            "receiving-ip": "127.77.1.2",
            "failure-reason-code": "hostname mismatch",
            "failed-session-count": 1,
        }
    ]
    stripped = reports["pf-stripped.example"]["policies"][0]["failure-details"][0]
    assert stripped["result-type"] == "starttls-not-supported"
    assert len(list(out.glob("*.eml"))) == 3


def _https_site(folder: Path) -> LabCA:
    ca = LabCA(folder / "ca")
    (folder / "example.com.pem").write_bytes(
        ca.issue(("mta-sts.example.com", "localhost"), Validity.VALID)
    )
    subprocess.run(
        [MTASTS, "init", "example.com", "--mx", "mx.example.com"],
        cwd=folder,
        env=ENV,
        check=True,
        capture_output=True,
    )
    text = (
        (folder / "mtasts.toml")
        .read_text()
        .replace(
            'name = "example.com"',
            'name = "example.com"\ncert_file = "example.com.pem"\nkey_file = "ca/certs/leaf.key"',
        )
    )
    (folder / "mtasts.toml").write_text(text)
    return ca


def test_reports_are_posted_to_an_https_rua_and_stored_by_serve_reports(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    ca = _https_site(site)
    received = f"sqlite:///{tmp_path / 'received.sqlite'}"
    server = subprocess.Popen(
        [MTASTS, "serve", "--host", "127.0.0.1", "--port", str(HTTPS_PORT), "--reports", received],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(HTTPS_PORT, server)
        db = f"sqlite:///{tmp_path / 'r.sqlite'}"
        (tmp_path / "mtasts.toml").write_text(
            f'[tlsrpt]\norganization = "Sender Example"\ncontact = "mailto:postmaster@sender.example"\n'
            f'ca_file = "{ca.ca_file}"\nnameserver = "127.0.0.1:{DEAD_DNS}"\ntimeout = 2\n'
            'retry = "1s"\nsuppress_after = 2\n'
        )
        process, path = start_collector(tmp_path, db)
        record = (
            f"v=TLSRPTv1;rua=https://localhost:{HTTPS_PORT}/tlsrpt,"
            f"https://localhost:{HTTPS_PORT}/missing"
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            for failed in (False, False, True):
                client.sendto(datagram("partner.example", failed, record), str(path))
        time.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        today = dt.datetime.now(dt.UTC).date().isoformat()
        send = [
            "tlsrpt",
            "send",
            "--day",
            today,
            "--db",
            db,
            "--config",
            str(tmp_path / "mtasts.toml"),
        ]
        done = run(*send)
        assert done.returncode == 2
        assert "the UTC day is not over" in done.stderr
        done = run(*send, "--partial-day", "--json")
        summary = json.loads(done.stdout)
        # One URI took it (2xx), so it is delivered; the other answered 404.
        assert (summary["built"], summary["sent"]) == (1, 1), done.stderr
        assert any("/missing answered 404" in e for e in summary["errors"])
        again = json.loads(run(*send, "--partial-day", "--json").stdout)
        assert (again["built"], again["sent"]) == (0, 0)  # never sent twice
        shown = run("reports", "show", "--db", received, "--json")
        stored = json.loads(shown.stdout) if shown.returncode == 0 else None
        listed = run("reports", "readiness", "partner.example", "--db", received)
        assert "certificate-host-mismatch" in listed.stdout, (listed.stdout, stored)
        assert "NOT READY" in listed.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)


def test_a_report_without_policy_domain_takes_the_mail_header_and_bare_type(tmp_path: Path) -> None:
    report = {
        "organization-name": "tlsrpt-reporter",
        "date-range": {
            "start-datetime": "2026-12-01T00:00:00Z",
            "end-datetime": "2026-12-01T23:59:59Z",
        },
        "contact-info": "postmaster@old.example",
        "report-id": "2026-12-01T00:00:00Z_idx1_something",
        "policies": [
            {
                "policy": {"policy-type": "no-policy-found"},
                "summary": {"total-successful-session-count": 4, "total-failure-session-count": 0},
            }
        ],
    }
    body = gzip.compress(json.dumps(report).encode())
    import base64

    mail = (
        "From: r@old.example\r\nTo: tlsrpt@hinted.example\r\nSubject: report\r\n"
        "TLS-Report-Domain: hinted.example\r\nTLS-Report-Submitter: old.example\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type="tlsrpt"; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        "--b\r\nContent-Type: application/tlsrpt\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(body).decode()
        + "\r\n--b--\r\n"
    )
    (tmp_path / "report.eml").write_text(mail)
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    done = run("reports", "ingest", str(tmp_path / "report.eml"), "--db", db, "--no-dkim")
    assert done.returncode == 0, done.stderr
    assert "stored 1" in done.stdout
    assert "quarantined 0" in done.stdout
    summary = run(
        "reports",
        "summary",
        "--domain",
        "hinted.example",
        "--since",
        "2026-11-01",
        "--db",
        db,
        "--json",
    )
    assert summary.returncode == 0, summary.stderr
    assert "hinted.example" in summary.stdout
    import sqlite3

    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        (warnings,) = conn.execute("SELECT warnings FROM reports").fetchone()
    assert "policy domain is missing; taken as 'hinted.example'" in warnings


def test_dkim_key_is_private_and_printed_with_s_tlsrpt(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "tlsrpt.key"
    first = run("tlsrpt", "dkim-key", "--domain", "sender.example", "--key", str(key), "--json")
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["name"] == "tlsrpt._domainkey.sender.example"
    assert record["value"].startswith("v=DKIM1; k=rsa; s=tlsrpt; p=")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = json.loads(
        run("tlsrpt", "dkim-key", "--domain", "sender.example", "--key", str(key), "--json").stdout
    )
    assert again["value"] == record["value"]  # an existing key is read, never replaced


def test_send_without_organization_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "mtasts.toml").write_text("[tlsrpt]\n")
    done = run(
        "tlsrpt",
        "send",
        "--db",
        f"sqlite:///{tmp_path / 'r.sqlite'}",
        "--config",
        str(tmp_path / "mtasts.toml"),
    )
    assert done.returncode == 2
    assert "organization is not set" in done.stderr
    assert "contact is not set" in done.stderr
    (tmp_path / "mtasts.toml").write_text('[tlsrpt]\nrelay_password = "hunter2"\n')
    done = run("tlsrpt", "send", "--config", str(tmp_path / "mtasts.toml"))
    assert done.returncode == 2
    assert "relay_password_file" in done.stderr


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('colour = "blue"', "unknown key 'colour'"),
        ("socket_mode = 0o666", "socket_mode must not let every user write"),
        ('relay = "smtp.example.net:587"\nsendmail = "/usr/sbin/sendmail"', "not both"),
        ('relay = "smtp.example.net"', "is not HOST:PORT"),
        ('retry = "soon"', "is not a duration"),
        ('sender = "not an address"', "is not an e-mail address"),
        ("timeout = 0", "timeout: seconds"),
    ],
)
def test_bad_tlsrpt_settings_are_refused_in_one_line(
    tmp_path: Path, table: str, message: str
) -> None:
    (tmp_path / "mtasts.toml").write_text(f"[tlsrpt]\n{table}\n")
    done = run(
        "tlsrpt",
        "send",
        "--db",
        f"sqlite:///{tmp_path / 'r.sqlite'}",
        "--config",
        str(tmp_path / "mtasts.toml"),
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert message in line
    assert "[tlsrpt]" in line


def test_prune_drops_old_days(tmp_path: Path) -> None:
    from mtasts.reporter.store import ReporterStore
    from mtasts.reports.store import open_store
    from mtasts.tlsrpt.datagram import parse_datagram

    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    store = ReporterStore(open_store(db).engine)
    session = parse_datagram(datagram("old.example", True, ""))
    now = dt.datetime.now(dt.UTC)
    store.add_sessions([(now - dt.timedelta(days=100), session), (now, session)], source="test")
    done = run("tlsrpt", "prune", "--older-than", "30d", "--db", db, "--json")
    assert json.loads(done.stdout)["tallies"] == 1
    (day,) = status(db)["days"]  # type: ignore[misc]
    assert day["day"] == now.date().isoformat()


def test_a_failing_endpoint_is_retried_then_suppressed_not_hammered(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    (tmp_path / "mtasts.toml").write_text(
        '[tlsrpt]\norganization = "Sender Example"\ncontact = "mailto:postmaster@sender.example"\n'
        f'nameserver = "127.0.0.1:{DEAD_DNS}"\ntimeout = 1\nsuppress_after = 2\n'
    )
    record = f"v=TLSRPTv1;rua=https://localhost:{DEAD_DNS}/nobody-listens"
    send = _queue_reports(tmp_path, db, {"down.example": record})
    rounds = [json.loads(run(*send).stdout) for _ in range(3)]
    assert [r["retrying"] for r in rounds] == [1, 1, 1]
    assert "suppressed after 2 failures in a row" in rounds[2]["errors"][0]
    (endpoint,) = status(db)["endpoints"]  # type: ignore[misc]
    assert endpoint["failures_in_a_row"] == 2  # the skipped round is not a third failure
    assert endpoint["suppressed_until"] is not None


def test_a_single_datagram_is_stored_within_seconds_while_running(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    (tmp_path / "mtasts.toml").write_text("[tlsrpt]\n")
    process, path = start_collector(tmp_path, db)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(datagram("quiet.example", False, ""), str(path))
        deadline = time.monotonic() + 20
        days: list[dict[str, object]] = []
        while time.monotonic() < deadline and not days:
            time.sleep(0.5)
            days = status(db)["days"]  # type: ignore[assignment]
        assert days, "nothing stored while the collector kept running"
        assert days[0]["sessions"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def _relay_config(tmp_path: Path, submission: dict[str, object], password: str) -> None:
    (tmp_path / "relay.password").write_text(password)
    (tmp_path / "mtasts.toml").write_text(
        '[tlsrpt]\norganization = "Sender Example"\ncontact = "mailto:postmaster@sender.example"\n'
        f'sender = "tlsrpt@watch.test"\nrelay = "127.0.0.1:{submission["port"]}"\n'
        f'relay_username = "{submission["user"]}"\nrelay_password_file = "relay.password"\n'
        f'ca_file = "{submission["ca_file"]}"\nnameserver = "127.0.0.1:{DEAD_DNS}"\n'
        'timeout = 10\nretry = "1s"\n'  # Dovecot answers a wrong password after 2 s
    )


def _queue_reports(tmp_path: Path, db: str, records: dict[str, str]) -> list[str]:
    """One failed session per domain through the collector; the ``tlsrpt send`` command."""
    process, path = start_collector(tmp_path, db)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        for domain, record in records.items():
            client.sendto(datagram(domain, True, record), str(path))
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    config = str(tmp_path / "mtasts.toml")
    return [
        "tlsrpt",
        "send",
        "--day",
        today,
        "--partial-day",
        "--json",
        "--db",
        db,
        "--config",
        config,
    ]


def _logged(maillog: Path, start: int, text: str, count: int) -> str:
    """What Postfix logged since ``start``, once ``text`` is in it ``count`` times (its
    log daemon writes on its own time) and a moment has passed for any extra one."""
    deadline = time.monotonic() + 20
    while maillog.read_text()[start:].count(text) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    return maillog.read_text()[start:]


def _report_mail(dovecot: dict[str, object], delete: bool = False) -> list[str]:
    """Subjects of the report mail in the mailbox the submission fixture delivers to; with
    ``delete``, removed as well (the watch tests read the same mailbox)."""
    import imaplib
    import ssl

    context = ssl.create_default_context(cafile=str(dovecot["ca_file"]))
    with imaplib.IMAP4(str(dovecot["host"]), int(str(dovecot["port"]))) as imap:
        imap.starttls(context)
        imap.login("alerts", "alerts-secret-2")
        imap.select("INBOX")
        _, found = imap.search(None, 'SUBJECT "Report Domain: relay-"')
        subjects = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects.append(" ".join(data[0][1].decode().split()))
            if delete:
                imap.store(number, "+FLAGS", "\\Deleted")
        if delete:
            imap.expunge()
    return sorted(subjects)


def test_report_mail_shares_one_authenticated_relay_session(
    tmp_path: Path, submission: dict[str, object], dovecot: dict[str, object]
) -> None:
    """A day's report mail goes through the relay (real Postfix submission, STARTTLS, Dovecot
    SASL) in one session, not one login per mail; a wrong password costs one failed login,
    not one per mail, and every report stays queued for its next attempt."""
    maillog = Path(str(submission["maillog"]))
    records = {f"relay-{n}.example": "v=TLSRPTv1;rua=mailto:tlsrpt@watch.test" for n in range(4)}
    records["relay-4.example"] = "v=TLSRPTv1;rua=mailto:tlsrpt@watch.test,mailto:ops@watch.test"
    try:
        _relay_config(tmp_path, submission, "wrong-password")
        send = _queue_reports(tmp_path, f"sqlite:///{tmp_path / 'r.sqlite'}", records)
        start = len(maillog.read_text())
        # As an admin reads it: the relay's refusal once, then a count, not a line per mail.
        shown = run(*[a for a in send if a != "--json"])
        assert shown.returncode == 1, shown.stderr
        assert "reports: 5 built, 0 sent, 5 to retry" in shown.stdout, shown.stdout
        listed = [line for line in shown.stderr.splitlines() if line.startswith("  ")]
        assert len(listed) == 2, shown.stderr
        assert "login as alerts refused: 535 5.7.8 Error: authentication failed" in listed[0]
        # Six mails (relay-4 takes two): the first met the refusal, the other five were not tried.
        assert "5 more mail(s) not tried in this run after the relay failed" in listed[1]
        logged = _logged(maillog, start, "disconnect from", 1)
        # One session whose login failed (smtplib tries PLAIN, then LOGIN), not six.
        assert logged.count(" connect from ") == 1, logged
        assert "auth=0/2" in logged, logged
        time.sleep(1.1)  # retry = 1s: all five are due again
        summary = json.loads(run(*send).stdout)
        assert (summary["sent"], summary["retrying"], summary["relay_not_tried"]) == (0, 5, 5)
        assert summary["relay_connections"] == 1
        (error,) = summary["errors"]
        assert "535" in error

        _relay_config(tmp_path, submission, str(submission["password"]))
        time.sleep(1.1)  # retry = 1s: all five are due again
        start = len(maillog.read_text())
        summary = json.loads(run(*send).stdout)
        assert (summary["sent"], summary["retrying"], summary["errors"]) == (5, 0, []), summary
        assert summary["relay_connections"] == 1
        logged = _logged(maillog, start, "sasl_username=alerts", 6)
        assert logged.count(" connect from ") == 1, logged  # one session carried all six
        assert logged.count("sasl_username=alerts") == 6, logged  # each mail authenticated
        deadline = time.monotonic() + 60
        while len(subjects := _report_mail(dovecot)) < 6 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [s.split(" Submitter:")[0] for s in subjects] == [
            f"Subject: Report Domain: relay-{n}.example" for n in (0, 1, 2, 3, 4, 4)
        ], (subjects, maillog.read_text()[-2000:])
    finally:
        _report_mail(dovecot, delete=True)


class _CappedRelay:
    """A relay on loopback that takes two mails per session, then drops it without a word,
    as relays with a per-connection cap or a short idle timeout do; counts its sessions."""

    def __init__(self) -> None:
        self.sessions = 0
        self.mails: list[bytes] = []
        self.port = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        taken = 0
        writer.write(b"220 capped.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-capped.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                body = b""
                while (part := await reader.readline()) not in (b".\r\n", b""):
                    body += part
                self.mails.append(body)
                taken += 1
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            elif taken >= 2:
                break  # the cap: the next mail's MAIL FROM meets a closed connection
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    def run(self, started: threading.Event, stop: threading.Event) -> None:
        async def main() -> None:
            server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            server.close()

        asyncio.run(main())


def test_a_relay_that_drops_the_session_between_mails_gets_a_new_one(tmp_path: Path) -> None:
    relay, started, stop = _CappedRelay(), threading.Event(), threading.Event()
    thread = threading.Thread(target=relay.run, args=(started, stop), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        (tmp_path / "mtasts.toml").write_text(
            '[tlsrpt]\norganization = "Sender Example"\n'
            'contact = "mailto:postmaster@sender.example"\n'
            f'relay = "127.0.0.1:{relay.port}"\nrelay_starttls = false\n'
            f'nameserver = "127.0.0.1:{DEAD_DNS}"\ntimeout = 5\n'
        )
        records = {
            f"relay-{n}.example": "v=TLSRPTv1;rua=mailto:tlsrpt@capped.test" for n in range(5)
        }
        send = _queue_reports(tmp_path, f"sqlite:///{tmp_path / 'r.sqlite'}", records)
        summary = json.loads(run(*send).stdout)
        assert (summary["sent"], summary["retrying"], summary["errors"]) == (5, 0, []), summary
        # Two mails a session: the third and fifth found theirs dropped and opened another.
        assert summary["relay_connections"] == relay.sessions == 3
        assert len(relay.mails) == 5
    finally:
        stop.set()
        thread.join(10)
