"""Where reports come from: files, folders, zips, standard input, Maildir and mbox.

Every input is a report file (JSON, gzip or zip of those) or a mail message
carrying them. A ``Batch`` collects them and stores a few hundred reports per
transaction; what a source does once a message is safe (moving a Maildir or
IMAP message to ``Processed`` or ``Failed``) runs only after the transaction
holding all of that message's reports has committed. A crash before then
leaves the message in place to be read again, and re-reading stores nothing
twice.
"""

from __future__ import annotations

import contextlib
import mailbox
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from mtasts.tlsrpt import ReportError
from mtasts.tlsrpt.mail import expand_zip, extract_reports
from mtasts.tlsrpt.parse import DEFAULT_MAX_SIZE

from .store import Incoming, Outcome, ReportStore, store_error

_GZIP, _ZIP = b"\x1f\x8b", b"PK\x03\x04"
DEFAULT_BATCH = 500

# Called after the commit with True when any report of the message went to quarantine.
AfterCommit = Callable[[bool], None]


@dataclass
class IngestResult:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # one line each: what, source: reason

    def add(self, outcome: str, source: str = "", detail: str = "") -> None:
        self.counts[outcome] += 1
        if outcome == Outcome.QUARANTINED:
            self.problems.append(f"quarantined: {source}: {detail}")


def _report_files(data: bytes, source: str, max_size: int) -> Iterator[Incoming]:
    """Every report file in one input: a report file itself, a zip of them or a message."""
    if data.startswith(_GZIP) or data.lstrip().startswith((b"{", b"[")):
        yield Incoming(data, source)
        return
    if data.startswith(_ZIP):
        try:
            members = expand_zip(data, max_size)
        except ReportError as exc:
            yield Incoming(data, source, error=exc)
            return
        for name, content in members:
            yield from _report_files(content, f"{source}!{name}", max_size)
        return
    mail = extract_reports(data)
    for part in mail.parts:
        for found in _report_files(part.data, source, max_size):
            where = f"{source} ({part.filename or part.content_type})"
            yield Incoming(found.data, where, mail.submitter, found.error)


class Batch:
    """Inputs from any source, stored ``size`` reports per transaction."""

    def __init__(self, store: ReportStore, result: IngestResult, size: int = DEFAULT_BATCH,
                 max_size: int = DEFAULT_MAX_SIZE) -> None:  # fmt: skip
        self.store, self.result, self.size, self.max_size = store, result, size, max_size
        self._messages: list[tuple[list[Incoming], AfterCommit | None]] = []
        self._pending = 0

    def add(self, data: bytes, source: str, then: AfterCommit | None = None) -> bool:
        """Queue every report in ``data``; False when it held none (unrelated mail, counted)."""
        items = list(_report_files(data, source, self.max_size))
        if not items:
            self.result.add("unrelated", source)
            return False
        self._messages.append((items, then))
        self._pending += len(items)
        if self._pending >= self.size:
            self.flush()
        return True

    def flush(self) -> None:
        if not self._messages:
            return
        messages, self._messages, self._pending = self._messages, [], 0
        reports = [item for items, _ in messages for item in items]
        outcomes = iter(self.store.ingest_many(reports, self.max_size))
        for items, then in messages:
            quarantined = False
            for item in items:
                stored = next(outcomes)
                self.result.add(stored.outcome, item.source, stored.detail)
                quarantined |= stored.outcome is Outcome.QUARANTINED
            if then is not None:
                then(quarantined)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:  # on an error nothing more is committed, and nothing is moved
            self.flush()


def ingest_path(batch: Batch, path: Path) -> None:
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            ingest_path(batch, child)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        batch.result.counts["unreadable"] += 1
        batch.result.problems.append(f"unreadable: {path}: {exc.strerror}")
        return
    batch.add(data, str(path))


def ingest_maildir(batch: Batch, folder: Path) -> None:
    """Every message in ``new/`` and ``cur/``; each moves to ``.Processed`` or ``.Failed``.

    The move is one rename(2) into the same subdirectory of the Maildir++ subfolder,
    so a message is always in exactly one place, whenever the process dies.
    """
    if not all((folder / sub).is_dir() for sub in ("new", "cur")):
        batch.result.counts["unreadable"] += 1
        batch.result.problems.append(
            f"unreadable: {folder}: not a Maildir (it needs new/ and cur/)"
        )
        return
    targets = {False: _subfolder(folder, "Processed"), True: _subfolder(folder, "Failed")}

    def move(path: Path) -> AfterCommit:
        def then(quarantined: bool) -> None:
            with contextlib.suppress(FileNotFoundError):  # another ingest of this Maildir moved it
                path.rename(targets[quarantined] / path.parent.name / path.name)

        return then

    for sub in ("new", "cur"):
        for path in sorted((folder / sub).iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue  # dot files are not messages (Maildir spec)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # another ingest of this Maildir took it meanwhile
            except OSError as exc:
                batch.result.counts["unreadable"] += 1
                batch.result.problems.append(f"unreadable: {path}: {exc.strerror}")
                continue
            batch.add(data, f"{folder}/{sub}/{path.name}", move(path))  # unrelated mail stays put


def watch_maildir(
    store: ReportStore,
    folder: Path,
    interval: float,
    on_round: Callable[[IngestResult], None] = lambda _result: None,
    size: int = DEFAULT_BATCH,
    max_size: int = DEFAULT_MAX_SIZE,
) -> None:
    """Read the Maildir every ``interval`` seconds; a failing store is reported and retried."""
    while True:
        result = IngestResult()
        try:
            with Batch(store, result, size, max_size) as batch:
                ingest_maildir(batch, folder)
        except SQLAlchemyError as exc:  # nothing moved: the next round reads it all again
            result.problems.append(f"error: {store_error(exc)}")
        on_round(result)
        time.sleep(interval)


def _subfolder(folder: Path, name: str) -> Path:
    """The Maildir++ subfolder ``.name`` (the layout Dovecot and Courier read), made if missing.

    exist_ok everywhere: two ingests starting at once may both create it.
    """
    path = folder / f".{name}"
    for sub in ("", "tmp", "new", "cur"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    (path / "maildirfolder").touch()  # marks a Maildir++ subfolder
    return path


def ingest_mbox(batch: Batch, path: Path) -> None:
    box = mailbox.mbox(path, create=False)
    for key in box.iterkeys():
        batch.add(box.get_bytes(key), f"{path}#{key}")


def retry_quarantined(
    store: ReportStore, result: IngestResult, max_size: int = DEFAULT_MAX_SIZE
) -> int:
    """Parse every quarantined input again (after an upgrade or with a larger limit).

    An input whose reports all store now (or were stored meanwhile) leaves the
    quarantine; the rest stay, counted as quarantined. Returns how many left.
    """
    released = 0
    for quarantine_id, data, source in store.quarantined_raw():
        items = list(_report_files(data, source, max_size)) or [Incoming(data, source)]
        outcomes = store.ingest_many(items, max_size)
        for item, stored in zip(items, outcomes, strict=True):
            result.add(stored.outcome, item.source, stored.detail)
        if all(stored.outcome is not Outcome.QUARANTINED for stored in outcomes):
            store.release(quarantine_id)  # after the commit above: a crash here only retries again
            released += 1
    return released
