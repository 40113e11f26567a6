"""Report ingest (parse + store + dedupe into SQLite) against parsedmarc's parse-only rate,
and ``readiness`` for one domain over 30 days of a large store.

``python -m bench.ingest_speed [MAILS] [ROWS]`` (defaults: 100,000 report mails,
1,000,000 stored reports). parsedmarc runs in its own virtual environment
(``PARSEDMARC_PYTHON``, or ``.venv-parsedmarc`` created on first use), so its
many dependencies stay out of ours.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session

from mtasts.lab.reports import SENDERS, _report, report_mail
from mtasts.reports.analysis import readiness, summary
from mtasts.reports.models import PolicyRow, RawReport, Report
from mtasts.reports.store import open_store

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parent.parent
_PARSE = """
import sys, time, pathlib, parsedmarc
files = sorted(pathlib.Path(sys.argv[1]).iterdir())
start = time.perf_counter()
for f in files:
    parsedmarc.parse_report_file(f.read_bytes(), offline=True)
print(time.perf_counter() - start)
"""


def parsedmarc_python() -> Path | None:
    if os.environ.get("PARSEDMARC_PYTHON"):
        return Path(os.environ["PARSEDMARC_PYTHON"])
    venv = ROOT / ".venv-parsedmarc"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "parsedmarc"], capture_output=True
        )
        if installed.returncode:
            return None
    return venv / "bin" / "python"


def make_mails(folder: Path, count: int) -> None:
    import random

    rng = random.Random(5)
    day = dt.date(2026, 5, 1)
    n = 0
    while n < count:
        for sender, _, _ in SENDERS:
            # One domain in ten has an expired certificate on one of its two MX addresses,
            # so its reports carry failure details, as real ones from such a domain would.
            broken = n % 10 == 0
            domain = {
                "name": f"d{n % 2000:04d}.example",
                "expect": ["certificate-expired"] if broken else [],
                "mx": [
                    {"address": "192.0.2.1", "fault": "none"},
                    {"address": "192.0.2.2", "fault": "certificate-expired" if broken else "none"},
                ],
            }
            doc = _report(sender, domain, day + dt.timedelta(days=n // 2000), rng)
            doc["report-id"] = f"r{n}"
            (folder / f"{n:06d}.eml").write_bytes(
                report_mail(
                    gzip.compress(json.dumps(doc).encode()),
                    sender.split()[0].lower(),
                    domain["name"],
                )
            )
            n += 1
            if n >= count:
                break


def bulk_store(url: str, rows: int, domains: int = 5000) -> None:
    """``rows`` reports over 60 days for ``domains`` domains, inserted directly (the parser is not under test)."""
    store = open_store(url)
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    with Session(store.engine) as session, session.begin():
        session.add(RawReport(sha256="0" * 64, data=b"", size=0, source="bench", received_at=now))
        session.flush()
        batch = 50_000
        for first in range(0, rows, batch):
            ids = range(first, min(rows, first + batch))
            session.execute(
                insert(Report),
                [
                    {
                        "id": i + 1,
                        "submitter": SENDERS[i % 3][0],
                        "report_id": f"b{i}",
                        "organization": SENDERS[i % 3][0],
                        "contact": "x",
                        "start": now - dt.timedelta(days=i % 60),
                        "end": now,
                        "raw_id": 1,
                        "warnings": "",
                        "ingested_at": now,
                    }
                    for i in ids
                ],
            )
            session.execute(
                insert(PolicyRow),
                [
                    {
                        "report_id": i + 1,
                        "submitter": SENDERS[i % 3][0],
                        "day": today - dt.timedelta(days=i % 60),
                        "policy_type": "sts",
                        "policy_domain": f"d{i % domains:04d}.example",
                        "policy_string": None,
                        "mx_host": "",
                        "successful": 100,
                        "failed": 0,
                    }
                    for i in ids
                ],
            )


def main(mails: int = 100_000, rows: int = 1_000_000) -> None:
    folder = Path(tempfile.mkdtemp(prefix="mtasts-bench-ingest-"))
    try:
        inbox = folder / "inbox"
        inbox.mkdir()
        make_mails(inbox, mails)
        db = f"sqlite:///{folder / 'ingest.sqlite'}"
        start = time.perf_counter()
        subprocess.run(
            [str(BIN / "mtasts"), "reports", "ingest", str(inbox), "--db", db],
            check=True,
            capture_output=True,
        )
        ours = time.perf_counter() - start
        print(
            f"{'mtasts ingest (parse+store+dedupe)':<38} {mails:,} mails in {ours:6.1f} s = {mails / ours:8,.0f}/s  (target 2,000/s)"
        )
        # The same mails as a Maildir, the way a mail server delivers them: each message also
        # moves to .Processed after its batch commits.
        box = folder / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True)
        for message in inbox.iterdir():
            shutil.copyfile(message, box / "new" / message.name)
        start = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "mtasts"),
                "reports",
                "ingest",
                "--maildir",
                str(box),
                "--db",
                f"sqlite:///{folder / 'maildir.sqlite'}",
            ],
            check=True,
            capture_output=True,
        )
        took = time.perf_counter() - start
        print(
            f"{'mtasts ingest --maildir (+ moves)':<38} {mails:,} mails in {took:6.1f} s = {mails / took:8,.0f}/s"
        )
        python = parsedmarc_python()
        if python is not None:
            theirs = float(
                subprocess.run(
                    [str(python), "-c", _PARSE, str(inbox)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            print(
                f"{'parsedmarc parse only (offline)':<38} {mails:,} mails in {theirs:6.1f} s = {mails / theirs:8,.0f}/s"
            )
            print(
                f"ratio: mtasts ingest-with-storage / parsedmarc parse-only = {(mails / ours) / (mails / theirs):.2f}"
            )
        else:
            print("parsedmarc could not be installed; comparison skipped")
        big = f"sqlite:///{folder / 'big.sqlite'}"
        started = time.perf_counter()
        bulk_store(big, rows)
        print(f"bulk-loaded {rows:,} reports in {time.perf_counter() - started:.0f} s")
        store = open_store(big)
        started = time.perf_counter()
        verdict = readiness(store, "d0042.example", days=30)
        took = time.perf_counter() - started
        print(
            f"readiness d0042.example over 30 days of {rows:,} reports: {took * 1000:.0f} ms ({verdict.sessions:,} sessions; target < 1 s)"
        )
        since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)
        started = time.perf_counter()
        one = summary(store, "d0042.example", since)
        print(
            f"summary d0042.example, 30 days: {(time.perf_counter() - started) * 1000:.0f} ms ({len(one)} rows)"
        )
        started = time.perf_counter()
        every = summary(store, None, since)
        print(
            f"summary of every domain, 30 days: {time.perf_counter() - started:.1f} s ({len(every):,} rows)"
        )
        started = time.perf_counter()
        pruned = store.prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=45))
        took = time.perf_counter() - started
        print(f"prune reports older than 45 days: {took:.1f} s ({pruned.reports:,} reports)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
