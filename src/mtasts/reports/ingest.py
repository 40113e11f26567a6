"""Where reports come from: files, folders, zips, standard input, Maildir and mbox.

Every input is a report file (JSON, gzip or zip of those) or a mail message
carrying them; each report is stored in its own transaction. A Maildir message
is moved to ``.Processed`` (or ``.Failed``) only after its reports are
committed, so a crash leaves it in place to be read again, and re-reading
stores nothing twice.
"""

from __future__ import annotations

import mailbox
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mtasts.tlsrpt import ReportError
from mtasts.tlsrpt.mail import expand_zip, extract_reports

from .store import Outcome, ReportStore

_GZIP, _ZIP = b"\x1f\x8b", b"PK\x03\x04"


@dataclass
class IngestResult:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # one line each: source: reason

    def add(self, outcome: str, source: str = "", detail: str = "") -> None:
        self.counts[outcome] += 1
        if outcome == Outcome.QUARANTINED:
            self.problems.append(f"{source}: {detail}")


Found = tuple[bytes, str, str | None, ReportError | None]


def _report_files(data: bytes, source: str) -> Iterator[Found]:
    """(report bytes, source, submitter hint, error) for one input: a report file, a zip or a message."""
    if data.startswith(_GZIP) or data.lstrip().startswith((b"{", b"[")):
        yield data, source, None, None
        return
    if data.startswith(_ZIP):
        try:
            members = expand_zip(data)
        except ReportError as exc:
            yield data, source, None, exc
            return
        for name, content in members:
            yield from _report_files(content, f"{source}!{name}")
        return
    mail = extract_reports(data)
    for part in mail.parts:
        for content, _, _, error in _report_files(part.data, source):
            yield content, f"{source} ({part.filename or part.content_type})", mail.submitter, error


def ingest_bytes(store: ReportStore, data: bytes, source: str, result: IngestResult) -> bool:
    """Store every report in ``data``; False when it held none (unrelated mail)."""
    found = False
    for content, where, submitter, error in _report_files(data, source):
        found = True
        stored = (
            store.quarantine_raw(content, where, error)
            if error
            else store.ingest(content, where, submitter)
        )
        result.add(stored.outcome, where, stored.detail)
    if not found:
        result.add("unrelated", source)
    return found


def ingest_path(store: ReportStore, path: Path, result: IngestResult) -> None:
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            ingest_path(store, child, result)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        result.counts["unreadable"] += 1
        result.problems.append(f"{path}: cannot read ({exc.strerror})")
        return
    ingest_bytes(store, data, str(path), result)


def ingest_maildir(store: ReportStore, folder: Path, result: IngestResult) -> None:
    box = mailbox.Maildir(folder, create=False)
    done = _subfolder(box, "Processed")
    failed = _subfolder(box, "Failed")
    for key in list(box.keys()):
        message = box.get_bytes(key)
        before = result.counts[Outcome.QUARANTINED]
        if not ingest_bytes(store, message, f"{folder}/{key}", result):
            continue  # unrelated mail stays where it is
        target = failed if result.counts[Outcome.QUARANTINED] > before else done
        # Moved only now, after the reports are committed: a crash before this line re-reads it.
        target.add(box.get_message(key))
        box.remove(key)


def _subfolder(box: mailbox.Maildir, name: str) -> mailbox.Maildir:
    try:
        return box.get_folder(name)
    except mailbox.NoSuchMailboxError:
        return box.add_folder(name)


def ingest_mbox(store: ReportStore, path: Path, result: IngestResult) -> None:
    box = mailbox.mbox(path, create=False)
    for key in box.iterkeys():
        ingest_bytes(store, box.get_bytes(key), f"{path}#{key}", result)
