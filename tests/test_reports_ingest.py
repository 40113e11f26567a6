"""``mtasts reports ingest`` from every channel, exactly once, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import gzip
import io
import json
import mailbox
import os
import re
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mtasts.lab.reports import report_mail as lab_report_mail
from mtasts.reports.models import FailureRow
from mtasts.reports.store import open_store

from .conftest import MTASTS
from .test_tlsrpt_report import RFC_EXAMPLE


def report(report_id: str, org: str = "Example Mail") -> bytes:
    doc: dict[str, Any] = copy.deepcopy(RFC_EXAMPLE)
    doc["report-id"], doc["organization-name"] = report_id, org
    return json.dumps(doc).encode()


def report_mail(
    data: bytes, *, filename: str | None = None, media: str = "application/tlsrpt+gzip"
) -> bytes:
    return lab_report_mail(gzip.compress(data), filename=filename, media=media)


def run(
    *args: str, db: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MTASTS, "reports", *args, "--db", db],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_every_file_shape_is_stored_once(db_url: str, tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.json").write_bytes(report("a"))
    (inbox / "b.json.gz").write_bytes(gzip.compress(report("b")))
    (inbox / "c.eml").write_bytes(report_mail(report("c")))
    (inbox / "d.eml").write_bytes(
        report_mail(report("d"), filename="report.json", media="application/json")
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("e.json", report("e"))
        zipped.writestr("nested/f.json.gz", gzip.compress(report("f")))
    (inbox / "g.zip").write_bytes(archive.getvalue())
    (inbox / "hello.eml").write_bytes(
        b"From: a@example.com\r\nSubject: lunch?\r\n\r\nsee you at noon\r\n"
    )
    first = run("ingest", str(inbox), db=db_url)
    assert first.returncode == 0, first.stderr
    assert "stored 6, duplicates 0, quarantined 0, unrelated mail skipped 1" in first.stdout
    again = run("ingest", str(inbox), db=db_url)
    assert "stored 0, duplicates 6, quarantined 0, unrelated mail skipped 1" in again.stdout
    store = open_store(db_url.replace("postgresql://", "postgresql://", 1))
    assert store.counts() == {"reports": 6, "raw": 6, "quarantined": 0}


def test_bad_input_is_quarantined_with_its_rule_and_the_batch_goes_on(
    db_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "1-bomb.json.gz").write_bytes(gzip.compress(b"{" + b" " * (25 * 1024 * 1024) + b"}"))
    (inbox / "2-broken.json").write_bytes(b'{"organization-name": "x", ')
    (inbox / "3-negative.json").write_bytes(
        report("neg").replace(b'"failed-session-count": 100', b'"failed-session-count": -4')
    )
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../../etc/cron.d/x", b"{}")
    (inbox / "4-traversal.zip").write_bytes(evil.getvalue())
    (inbox / "5-good.json").write_bytes(report("good"))
    result = run("ingest", str(inbox), db=db_url)
    assert result.returncode == 0
    assert "stored 1, duplicates 0, quarantined 4" in result.stdout
    listing = run("quarantine", db=db_url).stdout
    for rule in ("report.too-large", "report.json", "report.count-negative", "report.zip-path"):
        assert rule in listing
    assert open_store(db_url).counts()["raw"] == 5  # every raw input is kept


def test_stdin_takes_one_message_as_a_pipe_transport_gives_it(db_url: str) -> None:
    result = run("ingest", "-", db=db_url, stdin=report_mail(report("piped")))
    assert result.returncode == 0
    assert "stored 1" in result.stdout


def test_maildir_moves_messages_only_after_the_commit(db_url: str, tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    good = box.add(report_mail(report("md1")))
    bad = box.add(report_mail(b"not json at all"))
    other = box.add(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    result = run("ingest", "--maildir", str(tmp_path / "Maildir"), db=db_url)
    assert "stored 1, duplicates 0, quarantined 1, unrelated mail skipped 1" in result.stdout
    box = mailbox.Maildir(tmp_path / "Maildir", create=False)
    assert list(box.keys()) == [other]  # unrelated mail stays
    assert len(box.get_folder("Processed")) == 1
    assert len(box.get_folder("Failed")) == 1
    assert good not in box
    assert bad not in box


def test_mbox(db_url: str, tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "reports.mbox")
    for n in range(3):
        box.add(report_mail(report(f"mb{n}")))
    box.flush()
    assert "stored 3" in run("ingest", "--mbox", str(tmp_path / "reports.mbox"), db=db_url).stdout


def test_killed_mid_batch_loses_and_duplicates_nothing(db_url: str, tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    for n in range(400):
        (inbox / f"{n:04d}.json").write_bytes(report(f"k{n}"))
    process = subprocess.Popen(
        [MTASTS, "reports", "ingest", str(inbox), "--db", db_url, "--batch", "10", "--jobs", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    store = open_store(db_url)
    while store.counts()["reports"] < 20:  # wait until it is well into the batch
        assert process.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tasks = Path(f"/proc/{process.pid}/task").iterdir()
    workers = [pid for task in tasks for pid in (task / "children").read_text().split()]
    assert len(workers) == 2  # the worker processes reading the reports
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    # The workers go with it (they would hold the store's connections for ever).
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the killed ingest"
        time.sleep(0.05)
    partial = store.counts()["reports"]
    assert 20 <= partial < 400
    result = run("ingest", str(inbox), db=db_url)
    assert f"stored {400 - partial}, duplicates {partial}" in result.stdout
    assert store.counts() == {"reports": 400, "raw": 400, "quarantined": 0}


def test_any_batch_size_stores_the_same(tmp_path: Path) -> None:
    """Duplicates and bad reports inside one transaction are counted as they are across several."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    for n in range(30):
        (inbox / f"r{n:02d}.json").write_bytes(report(f"same-{n}"))
    for n in range(0, 30, 6):  # five of them again, as mail, in the same batch or the next
        (inbox / f"m{n:02d}.eml").write_bytes(report_mail(report(f"same-{n}")))
    for n in range(3):
        (inbox / f"x{n}.json").write_bytes(b'{"broken": ' + str(n).encode())
    seen = set()
    for size in ("1", "7", "500"):
        db = f"sqlite:///{tmp_path / f'batch-{size}.sqlite'}"
        counts = run("ingest", str(inbox), "--batch", size, db=db).stdout.splitlines()[-1]
        by_mx = run("summary", "--by", "mx", "--since", "2016-01-01", "--json", db=db).stdout
        seen.add((counts, by_mx, tuple(open_store(db).counts().items())))
    assert len(seen) == 1
    counts, by_mx, _ = seen.pop()
    assert counts == "stored 30, duplicates 5, quarantined 3, unrelated mail skipped 0"
    rows = json.loads(by_mx)
    assert {row["result_type"] for row in rows} == {
        "certificate-expired",
        "starttls-not-supported",
        "validation-failure",
    }
    assert sum(row["sessions"] for row in rows) == 30 * sum(
        d["failed-session-count"] for p in RFC_EXAMPLE["policies"] for d in p["failure-details"]
    )


def test_two_ingests_at_once_store_each_report_once(db_url: str, tmp_path: Path) -> None:
    """Two ingests read one folder from opposite ends and meet in the middle, where both try
    to store the same reports: each report is stored by exactly one of them."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    files = []
    for n in range(600):
        files.append(str(inbox / f"{n:04d}.json"))
        Path(files[-1]).write_bytes(report(f"race-{n}"))
    open_store(db_url)
    # Small batches: each racer takes long enough that they overlap even if one starts late.
    racers = [
        subprocess.Popen(
            [MTASTS, "reports", "ingest", *order, "--db", db_url, "--batch", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in (files, files[::-1])
    ]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    counts = []
    for out, _ in outputs:
        found = re.search(r"stored (\d+), duplicates (\d+), quarantined 0", out)
        assert found, out
        counts.append((int(found.group(1)), int(found.group(2))))
    assert sum(stored for stored, _ in counts) == 600
    assert sum(duplicate for _, duplicate in counts) == 600
    assert all(stored > 0 for stored, _ in counts), counts  # they really did overlap
    assert open_store(db_url).counts() == {"reports": 600, "raw": 600, "quarantined": 0}


def test_two_processes_can_create_a_new_store_at_once(db_url: str) -> None:
    racers = [
        subprocess.Popen(
            [MTASTS, "reports", "summary", "--db", db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [racer.communicate(timeout=60) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0], outputs


def test_the_report_size_limit_is_an_option_and_the_quarantine_can_be_retried(
    db_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    padding = b'"padding": "' + b"x" * 40_000 + b'", "report-id"'
    (inbox / "padded.json.gz").write_bytes(
        gzip.compress(report("padded").replace(b'"report-id"', padding))
    )
    (inbox / "broken.json").write_bytes(b'{"report-id": ')
    refused = run("ingest", str(inbox), "--max-report-size", "32K", db=db_url)
    assert "stored 0, duplicates 0, quarantined 2" in refused.stdout
    assert "inflates past the 32,768-byte limit" in refused.stdout
    assert "report.too-large" in run("quarantine", db=db_url).stdout
    # The raw bytes were kept, so a larger limit (or a fixed parser) can still store it.
    retried = run("quarantine", "--retry", db=db_url).stdout
    assert (
        "released 1 from the quarantine (1 reports stored, 0 already stored), 1 still held"
        in retried
    )
    held = run("quarantine", db=db_url).stdout
    assert "report.json" in held
    assert "report.too-large" not in held
    assert open_store(db_url).counts() == {"reports": 1, "raw": 2, "quarantined": 1}
    again = run("quarantine", "--retry", db=db_url).stdout
    assert (
        "released 0 from the quarantine (0 reports stored, 0 already stored), 1 still held" in again
    )
    wrong = run("ingest", str(inbox), "--max-report-size", "lots", db=db_url)
    assert wrong.returncode == 2
    assert "'lots': use a number of bytes, or one with K, M or G" in wrong.stderr


def test_a_maildir_killed_mid_batch_keeps_every_message_in_exactly_one_place(
    db_url: str, tmp_path: Path
) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in range(400):
        box.add(report_mail(report(f"mk{n}")))
    process = subprocess.Popen(
        [
            MTASTS,
            "reports",
            "ingest",
            "--maildir",
            str(tmp_path / "Maildir"),
            "--db",
            db_url,
            "--batch",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    store = open_store(db_url)
    while store.counts()["reports"] < 20:
        assert process.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    inbox = tmp_path / "Maildir" / "new"
    processed = tmp_path / "Maildir" / ".Processed" / "new"
    left = len(list(inbox.iterdir()))
    assert 0 < left < 400
    assert left + len(list(processed.iterdir())) == 400  # moved or not, never both, never lost
    committed = store.counts()["reports"]
    assert committed >= 400 - left  # a message moves only after its report is committed
    again = run("ingest", "--maildir", str(tmp_path / "Maildir"), db=db_url)
    assert f"stored {400 - committed}, duplicates {left - (400 - committed)}," in again.stdout
    assert (len(list(inbox.iterdir())), len(list(processed.iterdir()))) == (0, 400)
    assert store.counts() == {"reports": 400, "raw": 400, "quarantined": 0}


def test_each_kind_of_bad_report_names_its_rule_and_the_good_one_still_lands(
    db_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    bad = {
        "nested.json": b"[" * 200_000 + b"]" * 200_000,
        "latin1.json": report("latin").replace(b"Example Mail", "Exämple".encode("latin-1")),
        "absurd.json": report("absurd").replace(
            b'"failed-session-count": 100', b'"failed-session-count": 10000000000000000'
        ),
        "date.json": report("date").replace(b"2016-04-01T00:00:00Z", b"01/04/2016"),
        "truncated.json.gz": gzip.compress(report("cut"))[:-12],
    }
    for name, data in bad.items():
        (inbox / name).write_bytes(data)
    # A message whose MIME is broken (no closing boundary) but whose report part is whole.
    mail = report_mail(report("mime")).replace(b"--\r\n", b"\r\n")
    (inbox / "broken-mime.eml").write_bytes(mail)
    result = run("ingest", str(inbox), db=db_url)
    assert result.returncode == 0
    assert "stored 1, duplicates 0, quarantined 5" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("quarantined:")]
    assert len(lines) == 5  # one line each, naming the input
    for name in bad:
        assert any(f"{inbox / name}:" in line for line in lines), name
    # Each line ends with the rule broken, the same code the quarantine lists.
    assert sorted(line.rsplit("[", 1)[1].rstrip("]") for line in lines) == [
        "report.count-absurd",
        "report.date",
        "report.encoding",
        "report.gzip",
        "report.json",
    ]
    held = run("quarantine", db=db_url).stdout
    for rule in (
        "report.json",
        "report.encoding",
        "report.count-absurd",
        "report.date",
        "report.gzip",
    ):
        assert rule in held, rule


def test_a_store_that_fails_mid_run_is_one_line_and_moves_nothing(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in range(3):
        box.add(report_mail(report(f"ro{n}")))
    path = tmp_path / "r.sqlite"
    open_store(f"sqlite:///{path}")
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"  # as a full disk or a lost server would
    result = run("ingest", "--maildir", str(tmp_path / "Maildir"), db=read_only)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: the report store failed: attempt to write a readonly database;"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(mailbox.Maildir(tmp_path / "Maildir", create=False)) == 3  # still there to retry
    again = run("ingest", "--maildir", str(tmp_path / "Maildir"), db=f"sqlite:///{path}")
    assert "stored 3, duplicates 0" in again.stdout


def test_prune_drops_old_reports_with_their_rows_and_raw_bytes(db_url: str, tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    (inbox / "old1.json").write_bytes(report("old-1"))  # April 2016, like the RFC's example
    (inbox / "old2.json").write_bytes(report("old-2"))
    (inbox / "new.json").write_bytes(report("new").replace(b"2016-04-01", today.encode()))
    (inbox / "broken.json").write_bytes(b'{"report-id": ')
    assert "stored 3, duplicates 0, quarantined 1" in run("ingest", str(inbox), db=db_url).stdout
    store = open_store(db_url)
    before = store.counts()
    cutoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 400 * 86400))
    dry = run("prune", "--older-than", "400d", "--dry-run", db=db_url)
    assert (
        f"would prune 2 reports from before {cutoff} (2 policy rows, 2 raw reports)" in dry.stdout
    )
    assert store.counts() == before
    done = run("prune", "--older-than", "400d", db=db_url)
    assert f"pruned 2 reports from before {cutoff} (2 policy rows, 2 raw reports)" in done.stdout
    assert store.counts() == {
        "reports": 1,
        "raw": 2,
        "quarantined": 1,
    }  # the quarantine keeps its raw
    with store.engine.connect() as connection:  # no orphaned failure rows left behind
        failures = connection.scalar(select(func.count()).select_from(FailureRow))
    assert failures == len([d for p in RFC_EXAMPLE["policies"] for d in p["failure-details"]])
    days = {
        row["day"]
        for row in json.loads(run("summary", "--since", "2016-01-01", "--json", db=db_url).stdout)
    }
    assert days == {today}
    failures = json.loads(
        run("summary", "--by", "mx", "--since", "2016-01-01", "--json", db=db_url).stdout
    )
    assert {row["day"] for row in failures} == {today}
    wrong = run("prune", "--older-than", "soon", db=db_url)
    assert wrong.returncode == 2
    assert "'soon': use 30d, 2w or YYYY-MM-DD" in wrong.stderr


def test_watch_keeps_reading_a_maildir(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    process = subprocess.Popen(
        [
            MTASTS,
            "reports",
            "ingest",
            "--maildir",
            str(tmp_path / "Maildir"),
            "--watch",
            "--interval",
            "1",
            "--db",
            db,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        time.sleep(1.5)  # a round or two over the empty Maildir
        box.add(report_mail(report("delivered-later")))
        deadline = time.monotonic() + 20
        processed = tmp_path / "Maildir" / ".Processed" / "new"
        while not (processed.exists() and any(processed.iterdir())):
            assert process.poll() is None, "the watcher stopped"
            assert time.monotonic() < deadline, "the new message was not picked up"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=10)
    assert open_store(db).counts()["reports"] == 1
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ stored 1, duplicates 0", log, re.M), log
    both = run("ingest", "--watch", "--maildir", str(tmp_path / "Maildir"), str(tmp_path), db=db)
    assert both.returncode == 2
    assert (
        "--watch reads one mailbox: give --imap-url or one --maildir, nothing else" in both.stderr
    )


def test_two_ingests_of_one_maildir_at_once_move_each_message_once(tmp_path: Path) -> None:
    """Overlapping cron runs: whichever moves a message first wins; the other is not an error."""
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in range(300):
        box.add(report_mail(report(f"cron-{n}")))
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    open_store(db)
    command = [
        MTASTS,
        "reports",
        "ingest",
        "--maildir",
        str(tmp_path / "Maildir"),
        "--db",
        db,
        "--batch",
        "2",
    ]
    racers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    assert open_store(db).counts()["reports"] == 300
    processed = tmp_path / "Maildir" / ".Processed" / "new"
    assert len(list(processed.iterdir())) == 300
    assert not list((tmp_path / "Maildir" / "new").iterdir())


def test_a_folder_that_is_not_a_maildir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    result = run(
        "ingest", "--maildir", str(tmp_path / "plain"), db=f"sqlite:///{tmp_path / 'r.sqlite'}"
    )
    assert result.returncode == 1
    assert (
        f"unreadable: {tmp_path / 'plain'}: not a Maildir (it needs new/ and cur/)" in result.stdout
    )
    assert not (tmp_path / "plain" / ".Processed").exists()  # nothing made inside it


def test_a_piped_report_is_deferred_while_the_store_is_down(tmp_path: Path) -> None:
    """Postfix's pipe(8) bounces on any exit status but EX_TEMPFAIL (75), which defers and retries."""
    down = f"sqlite:///{tmp_path / 'no-such-folder' / 'deeper' / 'r.sqlite'}"
    (tmp_path / "no-such-folder").write_text("a file where the folder should be")
    piped = run("ingest", "-", db=down, stdin=report_mail(report("piped")))
    assert piped.returncode == 75, piped.stderr
    assert "cannot open the report store" in piped.stderr
    from_file = run("ingest", str(tmp_path / "no-such-folder"), db=down)
    assert from_file.returncode == 2


def test_an_interrupted_ingest_says_what_it_stored(tmp_path: Path) -> None:
    """Ctrl-C printed click's bare 'Aborted!': nothing said what was kept, or what to do."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    for n in range(20_000):
        (inbox / f"{n:05d}.json").write_bytes(report(f"int-{n}"))
    db = f"sqlite:///{tmp_path / 'r.sqlite'}"
    process = subprocess.Popen(
        [MTASTS, "reports", "ingest", str(inbox), "--batch", "100", "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "r.sqlite").exists() or open_store(db).counts()["reports"] < 100:
        assert process.poll() is None, "the ingest ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    match = re.search(r"interrupted: stored (\d+), duplicates 0", err)
    assert match, err
    assert int(match.group(1)) == open_store(db).counts()["reports"] < 20_000
    assert "run the same command again to go on (nothing is stored twice)" in err


def _mixed_inbox(folder: Path, count: int) -> None:
    """Report files and mails, duplicates, broken reports of several kinds and unrelated mail."""
    folder.mkdir()
    for n in range(count):
        kind = n % 10
        if kind == 0:
            (folder / f"{n:04d}.json").write_bytes(b'{"broken": ' + str(n).encode())
        elif kind == 1:
            (folder / f"{n:04d}.eml").write_bytes(
                b"From: a@example.com\r\nSubject: hi\r\n\r\nno\r\n"
            )
        elif kind == 2:  # the report that n + 2 mails, as a file: a duplicate, either order
            (folder / f"{n:04d}.json").write_bytes(report(f"p{n + 2}"))
        elif kind == 3:
            (folder / f"{n:04d}.json.gz").write_bytes(gzip.compress(report(f"p{n}"))[:-9])
        else:
            (folder / f"{n:04d}.eml").write_bytes(report_mail(report(f"p{n}")))


def test_worker_processes_store_exactly_what_one_process_stores(tmp_path: Path) -> None:
    """--jobs reads inputs in worker processes: counts, the order of problem lines, the
    quarantine's rules and every stored row come out as they do in one process."""
    inbox = tmp_path / "in"
    _mixed_inbox(inbox, 300)
    seen = []
    for jobs in ("1", "3"):
        db = f"sqlite:///{tmp_path / f'jobs-{jobs}.sqlite'}"
        result = run("ingest", str(inbox), "--jobs", jobs, "--batch", "40", "-v", db=db)
        assert result.returncode == 0, result.stderr
        by_mx = run("summary", "--by", "mx", "--since", "2016-01-01", "--json", db=db).stdout
        held = run("quarantine", "--json", db=db).stdout
        rules = sorted(entry["rule"] for entry in json.loads(held)["quarantine"])
        seen.append((result.stdout, by_mx, rules, open_store(db).counts()))
    assert seen[0] == seen[1]
    out, _, rules, counts = seen[0]
    assert "stored 180, duplicates 30, quarantined 60, unrelated mail skipped 30" in out
    assert counts == {"reports": 180, "raw": 240, "quarantined": 60}  # a duplicate keeps no raw
    assert set(rules) == {"report.json", "report.gzip"}


def test_worker_processes_move_each_maildir_message_after_its_commit(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in range(200):
        if n % 50 == 7:
            box.add(report_mail(b"not json at all"))
        elif n % 50 == 9:
            box.add(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
        else:
            box.add(report_mail(report(f"w{n}")))
    db = f"sqlite:///{tmp_path / 'maildir.sqlite'}"
    result = run("ingest", "--maildir", str(tmp_path / "Maildir"), "--jobs", "2", db=db)
    assert "stored 192, duplicates 0, quarantined 4, unrelated mail skipped 4" in result.stdout
    box = mailbox.Maildir(tmp_path / "Maildir", create=False)
    assert len(box) == 4  # unrelated mail stays
    assert len(box.get_folder("Processed")) == 192
    assert len(box.get_folder("Failed")) == 4


def test_workers_start_only_for_a_large_ingest_and_keep_the_order_of_moves(
    tmp_path: Path,
) -> None:
    from mtasts.reports.ingest import Batch, IngestResult

    store = open_store(f"sqlite:///{tmp_path / 'order.sqlite'}")
    moved: list[str] = []

    def then(name: str) -> Any:
        return lambda quarantined: moved.append(f"{name}{'!' if quarantined else ''}")

    with Batch(store, IngestResult(), size=7, workers=2) as small:
        for n in range(5):
            small.add(report_mail(report(f"s{n}")), f"s{n}", then(f"s{n}"))
        assert small._pool is None  # five inputs: not worth a process
    result = IngestResult()
    with Batch(store, result, size=7, workers=2) as large:
        for n in range(100):
            data = b"broken" if n % 9 == 0 else report_mail(report(f"l{n}"))
            large.add(data if n % 9 else report_mail(data), f"l{n}", then(f"l{n}"))
        assert large._pool is not None
    assert moved[:5] == [f"s{n}" for n in range(5)]
    assert moved[5:] == [f"l{n}{'!' if n % 9 == 0 else ''}" for n in range(100)]
    assert result.counts == {"stored": 88, "quarantined": 12}


def _many_policies(report_id: str, policies: int) -> bytes:
    """A report whose every policy has failure details that name that policy's domain."""
    doc: dict[str, Any] = copy.deepcopy(RFC_EXAMPLE)
    doc["report-id"] = report_id
    template = doc["policies"][0]
    doc["policies"] = []
    for n in range(policies):
        policy = copy.deepcopy(template)
        domain = f"p{n}.{report_id}.example"
        policy["policy"]["policy-domain"] = domain
        for detail in policy["failure-details"]:
            detail["receiving-mx-hostname"] = f"mx.{domain}"
        doc["policies"].append(policy)
    return json.dumps(doc).encode()


def test_failure_rows_belong_to_their_own_policy_in_large_batches(
    db_url: str, tmp_path: Path
) -> None:
    """Policy ids come back from multi-row inserts matched by (report, position), not by
    the order the database returned them in: every failure row must point at its policy."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    for n in range(120):  # several chunks for the workers, several policies per report
        (inbox / f"{n:03d}.eml").write_bytes(report_mail(_many_policies(f"r{n}", 1 + n % 4)))
    done = run("ingest", str(inbox), "--jobs", "2", "--batch", "50", db=db_url)
    assert done.returncode == 0, done.stderr
    assert "stored 120," in done.stdout
    store = open_store(db_url)
    with store.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT p.policy_domain, p.position, f.receiving_mx FROM failures f"
            " JOIN policy_results p ON p.id = f.policy_id"
        ).all()
        positions = connection.exec_driver_sql(
            "SELECT r.report_id, p.position, p.policy_domain FROM policy_results p"
            " JOIN reports r ON r.id = p.report_id"
        ).all()
    per_policy = len(RFC_EXAMPLE["policies"][0]["failure-details"])
    assert len(rows) == sum(1 + n % 4 for n in range(120)) * per_policy
    assert all(mx == f"mx.{domain}" for domain, _, mx in rows)
    assert all(domain == f"p{position}.{rid}.example" for rid, position, domain in positions)
