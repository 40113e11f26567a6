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
import dataclasses
import errno
import mailbox
import os
import re
import signal
import stat
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from mtasts.tlsrpt import ReportError, ReportTooLargeError
from mtasts.tlsrpt.mail import expand_zip, extract_reports
from mtasts.tlsrpt.parse import DEFAULT_MAX_SIZE, Budget, inflate

from .provenance import Channel, DkimVerifier, Provenance
from .store import Incoming, Outcome, Parsed, ReportStore, parse_item, store_error

if TYPE_CHECKING:
    import multiprocessing.context
    from concurrent.futures import Future, ProcessPoolExecutor

_GZIP, _ZIP = b"\x1f\x8b", b"PK\x03\x04"
DEFAULT_BATCH = 500

# Called after the commit with True when any report of the message went to quarantine.
AfterCommit = Callable[[bool], None]


@dataclass
class IngestResult:
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # one line each: what, source: reason
    skipped: list[str] = field(default_factory=list)  # "source: why", for --verbose

    def add(self, outcome: str, source: str = "", detail: str = "") -> None:
        self.counts[outcome] += 1
        if outcome == Outcome.QUARANTINED:
            self.problems.append(f"quarantined: {source}: {detail}")


MAX_ITEMS = 1000  # report files in one input: real mail carries one or two


def _report_files(
    data: bytes,
    source: str,
    max_size: int,
    channel: Channel = Channel.FILE,
    verifier: DkimVerifier | None = None,
) -> Iterator[Incoming]:
    """Every report file in one input: a report file itself, a zip of them or a message.

    One :class:`Budget` of ``max_size`` bytes covers the whole input: every MIME part,
    zip member and gzip stream draws from it (RFC 8460 §5.3 compression is where a
    small mail becomes a large one), and zips are expanded one level only.
    """
    budget = Budget(max_size)
    for count, item in enumerate(_files(data, source, budget, channel, verifier), 1):
        if count > MAX_ITEMS:
            too_many = ReportError(
                f"the input holds more than {MAX_ITEMS} report files",
                rule="report.too-many",
                section="§5.3",
            )
            yield Incoming(data, source, item.submitter_hint, too_many, provenance=item.provenance)
            return
        yield item


def _is_report_file(data: bytes) -> bool:
    return data.startswith(_GZIP) or data.lstrip().startswith((b"{", b"["))


def _files(
    data: bytes, source: str, budget: Budget, channel: Channel, verifier: DkimVerifier | None
) -> Iterator[Incoming]:
    plain = Provenance(channel)
    if _is_report_file(data):
        yield _inflated(data, source, budget, None, plain)
    elif data.startswith(_ZIP):
        yield from _zip_members(data, source, budget, None, plain)
    else:
        mail = extract_reports(data)
        if not mail.parts:
            return
        # RFC 8460 §3: report mail is DKIM-signed by the reporting domain.
        result, domain = verifier.verify(data) if verifier is not None else ("none", None)
        provenance = Provenance(channel, domain, result)
        for part in mail.parts:
            where = f"{source} ({part.filename or part.content_type})"
            if part.data.startswith(_ZIP):
                items = _zip_members(part.data, where, budget, mail.submitter, provenance)
            else:  # declared a report by its type or name: a broken one is quarantined
                items = iter([_inflated(part.data, where, budget, mail.submitter, provenance)])
            for item in items:
                yield dataclasses.replace(item, domain_hint=mail.domain)


def _zip_members(
    data: bytes, source: str, budget: Budget, submitter: str | None, provenance: Provenance
) -> Iterator[Incoming]:
    try:
        members = expand_zip(data, budget.limit, budget=budget)
    except ReportError as exc:
        yield Incoming(data, source, submitter, exc, provenance=provenance)
        return
    for name, content in members:
        if _is_report_file(content):  # a README.txt beside the report is not one
            yield _inflated(content, f"{source}!{name}", budget, submitter, provenance)


def _inflated(
    data: bytes, source: str, budget: Budget, submitter: str | None, provenance: Provenance
) -> Incoming:
    """The report file and its JSON, drawn from the input's budget; the raw bytes stay as sent."""
    try:
        if data.startswith(_GZIP):
            try:
                text = inflate(data, budget.remaining)
            except ReportTooLargeError:
                if budget.used:  # other parts of the input used some: say it is the sum
                    budget.take(budget.remaining + 1, source)
                raise
            budget.take(len(text), source)
            return Incoming(data, source, submitter, text=text, provenance=provenance)
        budget.take(len(data), source)
    except ReportError as exc:
        return Incoming(data, source, submitter, exc, provenance=provenance)
    return Incoming(data, source, submitter, provenance=provenance)


class _Message:
    """One input's place in the batch: its reports' outcomes, and what to do once all commit."""

    __slots__ = ("open", "quarantined", "reports", "then", "waiting")

    def __init__(self, then: AfterCommit | None) -> None:
        self.then, self.reports, self.waiting = then, 0, 0
        self.quarantined, self.open = False, True

    def settled(self) -> bool:
        return not self.open and self.waiting == 0


@dataclass(frozen=True, slots=True)
class _Read:
    """What one input held: its report files parsed, or why it held none."""

    parsed: list[Parsed]
    skipped: str = ""

    def __reduce__(self) -> tuple[type[_Read], tuple[list[Parsed], str]]:
        return (_Read, (self.parsed, self.skipped))  # the dataclass default is slower


def _read(
    data: bytes, source: str, channel: Channel, max_size: int, verifier: DkimVerifier | None
) -> _Read:
    """Every report file in one input, parsed: CPU only (and DKIM keys from DNS), no store."""
    parsed = [
        parse_item(item, max_size)
        for item in _report_files(data, source, max_size, channel, verifier)
    ]
    return _Read(parsed, "" if parsed else _why_skipped(data))


# A worker process's DKIM verifier, given once when the worker starts so its key cache
# lasts for every input the worker reads.
_worker_verifier: DkimVerifier | None = None


def _start_worker(verifier: DkimVerifier | None, parent: int) -> None:
    global _worker_verifier
    _worker_verifier = verifier
    # Ctrl-C reaches the whole process group. The ingest decides what an interrupt means
    # (commit nothing more, say what was stored); a worker interrupted while it waits for
    # work would die holding the task queue's lock and leave its siblings, and the ingest's
    # shutdown, waiting for ever.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)


def _die_with(parent: int) -> None:
    """End this worker when the ingest that started it ends, however it ends.

    A forked worker holds both ends of its task pipe, so it would never read EOF and
    would outlive a killed ingest, holding the store's inherited connections. Linux's
    PR_SET_PDEATHSIG has the kernel send SIGKILL when the parent goes; elsewhere a
    thread watches the parent's pid.
    """
    import ctypes  # only in a worker: a report piped in by Postfix never pays for it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
            if os.getppid() != parent:  # the parent died before the call took effect
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _read_chunk(inputs: list[tuple[bytes, str, Channel]], max_size: int) -> list[_Read]:
    return [
        _read(data, source, channel, max_size, _worker_verifier) for data, source, channel in inputs
    ]


# Inputs per task sent to a worker: enough to pay for the trip, few to hold. At most
# 2 x workers + 1 chunks are in memory at once, each bounded in bytes too (one large
# mail fills a chunk by itself).
_CHUNK = 32
_CHUNK_BYTES = 8 << 20
_FLIGHT_BYTES = 64 << 20


def default_workers() -> int:
    """Worker processes for a large ingest: one per core this process may use, at most 8."""
    return max(
        1,
        min(
            8,
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1,
        ),
    )


class Batch:
    """Inputs from any source, stored ``size`` reports per transaction.

    Reports stream in: a large input never sits whole in memory as a list, and a
    transaction commits whenever ``size`` reports or ``max_bytes`` of them are waiting.
    A message's after-commit step runs once the last of its reports has committed.

    With ``workers`` above 1, inputs are parsed (MIME, gzip, JSON, DKIM) by that many
    worker processes while this one stores, once the first few dozen inputs show the
    ingest is large enough to pay for starting them; results are taken in input order,
    so outcomes, counts and after-commit steps come exactly as without workers.
    """

    def __init__(
        self,
        store: ReportStore,
        result: IngestResult,
        size: int = DEFAULT_BATCH,
        max_size: int = DEFAULT_MAX_SIZE,
        max_bytes: int = 64 << 20,
        verifier: DkimVerifier | None = None,
        workers: int = 1,
    ) -> None:
        self.store, self.result, self.size, self.max_size = store, result, size, max_size
        self.verifier = verifier
        self.max_bytes = max(max_bytes, max_size)
        self._items: list[tuple[Parsed, _Message]] = []
        self._waiting: list[_Message] = []  # messages with reports not yet committed, in order
        self._bytes = 0
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._chunk: list[tuple[bytes, str, AfterCommit | None, Channel]] = []
        self._chunk_bytes = 0
        self._sent: deque[tuple[Future[list[_Read]], list[tuple[str, AfterCommit | None]], int]] = (
            deque()
        )
        self._sent_bytes = 0

    def add(
        self,
        data: bytes,
        source: str,
        then: AfterCommit | None = None,
        channel: Channel = Channel.FILE,
    ) -> bool:
        """Queue every report in ``data``; False when it held none (unrelated mail, counted).

        With workers the input is read later, in a worker: this returns True, and an
        input that held no report is counted when its turn comes.
        """
        if self.workers > 1:
            self._chunk.append((data, source, then, channel))
            self._chunk_bytes += len(data)
            if len(self._chunk) >= _CHUNK or self._chunk_bytes >= _CHUNK_BYTES:
                self._send()
            return True
        return self._accept(
            source, then, _read(data, source, channel, self.max_size, self.verifier)
        )

    def _send(self) -> None:
        if self._pool is None:
            # Imported here: a report piped in by Postfix (one start per mail) never forks.
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=_fork_context(),
                initializer=_start_worker,
                initargs=(self.verifier, os.getpid()),
            )
        chunk, size = self._chunk, self._chunk_bytes
        self._chunk, self._chunk_bytes = [], 0
        inputs = [(data, source, channel) for data, source, _, channel in chunk]
        future = self._pool.submit(_read_chunk, inputs, self.max_size)
        self._sent.append((future, [(source, then) for _, source, then, _ in chunk], size))
        self._sent_bytes += size
        # Enough in flight that the workers never wait while this process commits a batch
        # (a batch of 500 takes tens of milliseconds, longer than two chunks take to read),
        # and memory stays bounded: at most _FLIGHT_BYTES of inputs besides the batch.
        while len(self._sent) > 2 * self.workers + self.size // _CHUNK or (
            self._sent_bytes > _FLIGHT_BYTES and len(self._sent) > self.workers
        ):
            self._take()

    def _take(self) -> None:
        future, inputs, size = self._sent.popleft()
        self._sent_bytes -= size
        for (source, then), read in zip(inputs, future.result(), strict=True):
            self._accept(source, then, read)

    def _accept(self, source: str, then: AfterCommit | None, read: _Read) -> bool:
        message = _Message(then)
        self._waiting.append(message)
        for parsed in read.parsed:
            message.reports += 1
            message.waiting += 1
            self._items.append((parsed, message))
            self._bytes += parsed.held
            if len(self._items) >= self.size or self._bytes >= self.max_bytes:
                self.flush()
        message.open = False
        if message.reports == 0:
            self._waiting.remove(message)
            self.result.add("unrelated", source)
            if len(self.result.skipped) < 10_000:
                self.result.skipped.append(f"{source}: {read.skipped}")
            return False
        self._settle()
        return True

    def _finish_reading(self) -> None:
        """Every input added so far read and queued (a small ingest never starts a worker)."""
        if self._chunk and self._pool is None:
            chunk, self._chunk, self._chunk_bytes = self._chunk, [], 0
            for data, source, then, channel in chunk:
                self._accept(
                    source, then, _read(data, source, channel, self.max_size, self.verifier)
                )
        elif self._chunk:
            self._send()
        while self._sent:
            self._take()

    def flush(self) -> None:
        if not self._items:
            return
        items, self._items, self._bytes = self._items, [], 0
        # A Ctrl-C between the commit and the counting would make "interrupted: stored N"
        # disagree with the store, so it waits until both are done.
        with _interrupts_deferred():
            outcomes = self.store.store_parsed([parsed for parsed, _ in items])
            for (parsed, message), stored in zip(items, outcomes, strict=True):
                self.result.add(stored.outcome, parsed.source, stored.detail)
                message.quarantined |= stored.outcome is Outcome.QUARANTINED
                message.waiting -= 1
            self._settle()

    def _settle(self) -> None:
        while self._waiting and self._waiting[0].settled():
            message = self._waiting.pop(0)
            if message.then is not None:
                message.then(message.quarantined)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if kind is None:  # on an error nothing more is committed, and nothing is moved
                self._finish_reading()
                self.flush()
        finally:
            if self._pool is not None:
                # After an error or an interrupt, the chunks in flight are of no use: do not
                # wait for them (the workers end with this process in any case).
                self._pool.shutdown(wait=kind is None, cancel_futures=True)
                self._pool = None


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """SIGINT held back for the block, then delivered as it would have been."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers, and only it runs them
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _fork_context() -> multiprocessing.context.BaseContext:
    # Fork where there is one: a worker starts in milliseconds with every module already
    # imported, and the CLI's ingest has no threads a fork could catch holding a lock.
    # Workers never touch the parent's database connections, and leave with os._exit.
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


_HEADER = re.compile(rb"[A-Za-z][A-Za-z0-9-]*:[ \t]")


def _why_skipped(data: bytes) -> str:
    if not data.strip():
        return "empty"
    if _HEADER.match(data):
        return "mail without a report part (no application/tlsrpt+gzip or report file attached)"
    return f"{len(data):,} bytes that are not a report, a zip of reports or a mail carrying one"


def ingest_path(batch: Batch, path: Path) -> None:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                ingest_path(batch, child)
            elif child.is_symlink() and len(batch.result.skipped) < 10_000:
                batch.result.counts["unrelated"] += 1
                batch.result.skipped.append(f"{child}: a symbolic link to nothing")
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

    limit = max_message(batch.max_size)
    for sub in ("new", "cur"):
        for path in sorted((folder / sub).iterdir()):
            if path.name.startswith("."):
                continue  # dot files are not messages (Maildir spec)
            try:
                data = _read_message(path, limit)
            except FileNotFoundError:
                continue  # another ingest of this Maildir took it meanwhile
            except IsADirectoryError:
                continue
            except OSError as exc:
                batch.result.counts["unreadable"] += 1
                batch.result.problems.append(f"unreadable: {path}: {exc.strerror or exc}")
                if isinstance(exc, _TooBig):
                    move(path)(True)  # aside into .Failed, so it is not read every round
                continue
            # unrelated mail stays put
            batch.add(data, f"{folder}/{sub}/{path.name}", move(path), Channel.MAILDIR)


def max_message(max_size: int) -> int:
    """The largest mail read for reports: a report of ``max_size``, base64-encoded, and headers."""
    return max_size * 4 // 3 + (1 << 20)


class _TooBig(OSError):
    pass


def _read_message(path: Path, limit: int) -> bytes:
    """A Maildir message, never through a symlink (security review #23) nor past ``limit``.

    Whoever can write to the Maildir could otherwise make a more privileged ingest copy
    any file it can read into the store.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, "a symbolic link, not followed") from None
        raise
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(str(path))
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > limit:
            raise _TooBig(
                errno.EFBIG,
                f"{info.st_size:,} bytes, over the {limit:,}-byte limit; moved to .Failed",
            )
        return handle.read(limit + 1)


def watch_maildir(
    store: ReportStore,
    folder: Path,
    interval: float,
    on_round: Callable[[IngestResult], None] = lambda _result: None,
    size: int = DEFAULT_BATCH,
    max_size: int = DEFAULT_MAX_SIZE,
    verifier: DkimVerifier | None = None,
) -> None:
    """Read the Maildir every ``interval`` seconds; a failing store is reported and retried."""
    while True:
        result = IngestResult()
        try:
            with Batch(store, result, size, max_size, verifier=verifier) as batch:
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
        batch.add(box.get_bytes(key), f"{path}#{key}", channel=Channel.MBOX)


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
