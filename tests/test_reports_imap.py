"""IMAP ingest against a real Dovecot: messages move only after their reports are stored."""

from __future__ import annotations

import imaplib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from mtasts.reports.store import open_store

from .conftest import IMAP_PORT, MTASTS
from .test_reports_ingest import report, report_mail


def mailbox(server: dict[str, object]) -> imaplib.IMAP4:
    client = imaplib.IMAP4(str(server["host"]), int(str(server["port"])))
    client.login(str(server["user"]), str(server["password"]))
    return client


def count(client: imaplib.IMAP4, folder: str) -> int:
    status, data = client.select(folder, readonly=True)
    return int(data[0]) if status == "OK" else -1


def ingest_command(
    server: dict[str, object], *args: str, folder: str = "INBOX", tls: bool = False, ca: bool = True
) -> list[str]:
    """``mtasts reports ingest --imap-url`` for ``folder`` of the test Dovecot (STARTTLS, or imaps)."""
    scheme, port = ("imaps", server["tls_port"]) if tls else ("imap", server["port"])
    url = f"{scheme}://{server['user']}@{server['host']}:{port}/{folder}"
    trust = ["--imap-ca-file", str(server["ca_file"])] if ca else []
    return [MTASTS, "reports", "ingest", "--imap-url", url, *trust, *args]


def imap_env(server: dict[str, object], password: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "NO_COLOR": "1",
        "MTASTS_IMAP_PASSWORD": password or str(server["password"]),
    }


def run(
    *args: str,
    server: dict[str, object],
    db: str,
    password: str | None = None,
    folder: str = "INBOX",
    tls: bool = False,
    ca: bool = True,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ingest_command(server, "--db", db, *args, folder=folder, tls=tls, ca=ca),
        capture_output=True,
        text=True,
        env=imap_env(server, password),
        timeout=120,
    )


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
    process = subprocess.Popen(
        ingest_command(dovecot, "--db", db, "--watch", "--interval", "1"),
        env=imap_env(dovecot),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    assert result.stderr.startswith(f"error: 127.0.0.1:{IMAP_PORT}:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_watch_is_woken_by_idle_long_before_its_interval(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    """With a 10-minute interval only IDLE (RFC 2177) can bring a new report in within seconds."""
    client = mailbox(dovecot)
    client.create("Idle")
    client.append("Idle", None, None, b"From: a@example.com\r\nSubject: not a report\r\n\r\nhi\r\n")
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    command = ingest_command(
        dovecot,
        "--db",
        db,
        "--watch",
        "--interval",
        "600",
        "--imap-processed",
        "Idle-done",
        folder="Idle",
    )
    process = subprocess.Popen(
        command, env=imap_env(dovecot), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(2)  # the first round finds the folder empty and starts waiting
        client.append("Idle", None, None, report_mail(report("idled")))
        deadline = time.monotonic() + 20
        store = open_store(db)
        while store.counts()["reports"] < 1:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "IDLE did not wake the watcher"
            time.sleep(0.2)
        while count(client, "Idle-done") < 1:  # moved once the report is committed
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=10)
    assert count(client, "Idle") == 1  # the mail that is not a report stays
    # A service's journal gets one timestamped line per round that stored something; the
    # unrelated mail is neither logged every round nor fetched again once seen.
    lines = [line for line in log.splitlines() if " stored " in line]
    assert len(lines) == 1, log
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ stored 1, duplicates 0, quarantined 0, "
        r"unrelated mail skipped 0",
        lines[0],
    ), log
    client.logout()


def test_a_large_folder_is_read_and_moved_in_sets(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    """More messages than one FETCH set and one transaction hold: all stored once, all moved."""
    client = mailbox(dovecot)
    client.create("Bulk")
    for n in range(230):
        client.append("Bulk", None, None, report_mail(report(f"bulk-{n}")))
    for n in range(5):
        client.append(
            "Bulk", None, None, f"From: a@example.com\r\nSubject: {n}\r\n\r\nhi\r\n".encode()
        )
    client.append("Bulk", None, None, report_mail(report("bulk-7")))  # the same report again
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    result = run(
        "--batch",
        "40",
        "--imap-processed",
        "Bulk-done",
        "--imap-failed",
        "Bulk-failed",
        server=dovecot,
        db=db,
        folder="Bulk",
    )
    assert result.returncode == 0, result.stderr
    assert "stored 230, duplicates 1, quarantined 0, unrelated mail skipped 5" in result.stdout
    assert (count(client, "Bulk"), count(client, "Bulk-done"), count(client, "Bulk-failed")) == (
        5,
        231,
        0,
    )
    assert open_store(db).counts()["reports"] == 230
    client.logout()


def test_watch_outlives_a_failing_store_and_moves_nothing_meanwhile(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    client = mailbox(dovecot)
    client.create("Outage")
    client.append("Outage", None, None, report_mail(report("outage")))
    path = tmp_path / "r.sqlite"
    open_store(f"sqlite:///{path}")
    command = ingest_command(
        dovecot,
        "--watch",
        "--interval",
        "1",
        "--db",
        f"sqlite:///file:{path}?mode=ro&uri=true",
        folder="Outage",
    )
    process = subprocess.Popen(
        command, env=imap_env(dovecot), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(3)  # two or three rounds, each failing to store
        assert process.poll() is None, "the watcher died with the store"
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=10)
    assert "error: the report store failed: attempt to write a readonly database" in log
    assert "Traceback" not in log
    assert count(client, "Outage") == 1  # nothing moved: the next good round will take it
    client.logout()


def test_ingest_never_expunges_mail_the_user_marked_deleted(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    client = mailbox(dovecot)
    client.create("Keep")
    client.append("Keep", None, None, report_mail(report("keep")))
    client.append(
        "Keep", "(\\Deleted)", None, b"Subject: the user's, marked deleted\r\n\r\nkeep\r\n"
    )
    result = run(
        "--imap-processed",
        "Keep-done",
        server=dovecot,
        db=f"sqlite:///{tmp_path / 'r.sqlite'}",
        folder="Keep",
    )
    assert "stored 1" in result.stdout, result.stderr
    assert (count(client, "Keep"), count(client, "Keep-done")) == (1, 1)
    client.logout()


def test_without_move_a_copy_and_uid_expunge_leave_the_users_deleted_mail_alone(
    dovecot: dict[str, object],
) -> None:
    """Servers without MOVE (RFC 6851) get COPY + UID EXPUNGE (RFC 4315), never a bare EXPUNGE."""
    from mtasts.reports.imap import ImapSource, _connect, _move

    client = mailbox(dovecot)
    for folder in ("Plain", "Plain-done"):
        client.create(folder)
    client.append("Plain", None, None, report_mail(report("plain")))
    client.append(
        "Plain", "(\\Deleted)", None, b"Subject: the user's, marked deleted\r\n\r\nkeep\r\n"
    )
    source = ImapSource(
        str(dovecot["host"]),
        int(str(dovecot["port"])),
        str(dovecot["user"]),
        "Plain",
        False,
        str(dovecot["password"]),
        ca_file=Path(str(dovecot["ca_file"])),
    )
    mover = _connect(source)
    assert {"MOVE", "UIDPLUS"} <= set(mover.capabilities)  # as announced after login
    mover.capabilities = tuple(c for c in mover.capabilities if c != "MOVE")
    _, found = mover.uid("SEARCH", "UNDELETED")
    _move(mover, found[0].split(), "Plain-done")
    mover.logout()
    assert (count(client, "Plain"), count(client, "Plain-done")) == (1, 1)
    client.logout()


def test_imap_urls_upgrade_with_starttls_and_imaps_works_too(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    client = mailbox(dovecot)
    client.create("Secure")
    client.append("Secure", None, None, report_mail(report("secure")))
    client.logout()
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    # The server offers STARTTLS, so imap:// takes it and verifies the certificate: without the
    # test CA the upgrade fails before the password is sent.
    untrusted = run(server=dovecot, db=db, folder="Secure", ca=False)
    assert untrusted.returncode == 1
    assert untrusted.stderr.startswith(
        f"error: 127.0.0.1:{IMAP_PORT}: [SSL: CERTIFICATE_VERIFY_FAILED]"
    )
    assert len(untrusted.stderr.strip().splitlines()) == 1
    stored = run(server=dovecot, db=db, folder="Secure", tls=True)
    assert "stored 1, duplicates 0" in stored.stdout, stored.stderr


def test_oauth2_mailboxes_log_in_with_an_access_token(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    """Gmail and Microsoft 365 take SASL XOAUTH2, not passwords; Dovecot checks the token the
    way they do, by introspection (RFC 7662) at a token endpoint."""
    client = mailbox(dovecot)
    client.create("Workspace")
    client.append("Workspace", None, None, report_mail(report("oauth")))
    client.logout()
    token = tmp_path / "token"

    def ingest() -> subprocess.CompletedProcess[str]:
        # A wrong password in the environment too: the token, not the password, logs in.
        return run(
            "--imap-token-file",
            str(token),
            server=dovecot,
            db=f"sqlite:///{tmp_path / 'r.sqlite'}",
            folder="Workspace",
            password="not-the-password",
        )

    token.write_text("expired-or-wrong\n")
    refused = ingest()
    assert refused.returncode == 1
    assert (
        refused.stderr
        == f"error: 127.0.0.1:{IMAP_PORT}: [AUTHENTICATIONFAILED] Authentication failed.\n"
    )
    assert len(refused.stderr.strip().splitlines()) == 1
    token.write_text(
        f"{dovecot['token']}\n"
    )  # the refresher wrote a new token: read at the next login
    stored = ingest()
    assert "stored 1, duplicates 0" in stored.stdout, stored.stderr


def test_an_oversized_message_is_set_aside_unread(
    dovecot: dict[str, object], tmp_path: Path
) -> None:
    """Security review #29: 100 messages were fetched whole at once, whatever their size."""
    client = mailbox(dovecot)
    client.create("Huge")
    client.create("Huge-failed")
    client.append("Huge", None, None, report_mail(report("small-one")))
    client.append(
        "Huge", None, None, b"From: a@example.com\r\nSubject: big\r\n\r\n" + b"x" * (3 << 20)
    )
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    result = run(
        "--max-report-size",
        "1M",
        "--imap-failed",
        "Huge-failed",
        server=dovecot,
        db=db,
        folder="Huge",
    )
    assert "over the 2,446,677-byte limit; moved to Huge-failed" in result.stdout, result.stdout
    assert "stored 1, duplicates 0, quarantined 0" in result.stdout
    assert (count(client, "Huge"), count(client, "Huge-failed")) == (0, 1)
    client.logout()
