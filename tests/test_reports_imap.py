"""IMAP ingest against a real Dovecot: messages move only after their reports are stored."""

from __future__ import annotations

import imaplib
import os
import signal
import subprocess
import time
from pathlib import Path

from mtasts.reports.store import open_store

from .conftest import MTASTS
from .test_reports_ingest import report, report_mail


def mailbox(server: dict[str, object]) -> imaplib.IMAP4:
    client = imaplib.IMAP4(str(server["host"]), int(str(server["port"])))
    client.login(str(server["user"]), str(server["password"]))
    return client


def count(client: imaplib.IMAP4, folder: str) -> int:
    status, data = client.select(folder, readonly=True)
    return int(data[0]) if status == "OK" else -1


def run(
    *args: str, server: dict[str, object], db: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "MTASTS_IMAP_PASSWORD": password or str(server["password"]),
    }
    url = f"imap://{server['user']}@{server['host']}:{server['port']}/INBOX"
    return subprocess.run([MTASTS, "reports", "ingest", "--imap-url", url, "--db", db, *args],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


def test_imap_ingest_moves_reports_and_leaves_other_mail(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    client = mailbox(dovecot)
    client.append("INBOX", None, None, report_mail(report("imap-1")))
    client.append("INBOX", None, None, report_mail(b"{ broken"))
    client.append("INBOX", None, None, b"From: a@example.com\r\nSubject: lunch\r\n\r\nnoon?\r\n")
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    first = run(server=dovecot, db=db)
    assert first.returncode == 0, first.stderr
    assert "stored 1, duplicates 0, quarantined 1, unrelated mail skipped 1" in first.stdout
    assert (count(client, "INBOX"), count(client, "Processed"), count(client, "Failed")) == (
        1,
        1,
        1,
    )
    again = run(server=dovecot, db=db)
    assert "stored 0, duplicates 0, quarantined 0, unrelated mail skipped 1" in again.stdout
    client.logout()


def test_watch_picks_up_new_mail(dovecot: dict[str, object], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    env = {**os.environ, "MTASTS_IMAP_PASSWORD": str(dovecot["password"])}
    url = f"imap://{dovecot['user']}@{dovecot['host']}:{dovecot['port']}/INBOX"
    process = subprocess.Popen([MTASTS, "reports", "ingest", "--imap-url", url, "--db", db, "--watch", "--interval", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        client = mailbox(dovecot)
        client.append("INBOX", None, None, report_mail(report("watched")))
        client.logout()
        deadline = time.monotonic() + 30
        store = open_store(db)
        while store.counts()["reports"] < 1:
            assert time.monotonic() < deadline, "the watcher did not store the new report"
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(10)


def test_wrong_password_is_one_clear_line(dovecot: dict[str, object], tmp_path: Path) -> None:
    result = run(server=dovecot, db=f"sqlite:///{tmp_path / 'r.sqlite'}", password="nope")
    assert result.returncode == 1
    assert result.stderr.startswith("error: 127.0.0.1:21143:")
    assert len(result.stderr.strip().splitlines()) == 1
