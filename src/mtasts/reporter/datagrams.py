"""The libtlsrpt socket: a Unix datagram socket Postfix 3.10+ writes one session to at a time.

libtlsrpt sends without waiting (``MSG_DONTWAIT``): when our queue is full the datagram
is dropped on the MTA's side, which is never blocked. The queue holds at most
``net.unix.max_dgram_qlen`` datagrams (Linux's default: 10) and ``SO_RCVBUF`` bytes, so
the socket asks for a large buffer (``SO_RCVBUFFORCE`` as root, else ``SO_RCVBUF`` up to
``rmem_max``), a thread does nothing but read and count identical datagrams, and once a
second another process parses and stores them, so neither a slow disk nor Python's
global lock stops the reading.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import hashlib
import logging
import multiprocessing
import os
import pwd
import socket
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from mtasts.tlsrpt.datagram import MAX_DATAGRAM, DatagramError, Session, parse_datagram

from .store import ReporterStore

log = logging.getLogger("mtasts.reporter")

RECEIVE_BUFFER = 32 * 1024 * 1024
_FLUSH_SECONDS = 1.0
_MAX_DISTINCT = 200_000  # distinct datagrams held before the reader waits for the store
_KEEP_AT_MOST = 1_000  # malformed datagrams kept for inspection per run


def open_socket(
    path: Path, mode: int = 0o660, owner: str | None = None, group: str | None = None
) -> tuple[socket.socket, int]:
    """The bound datagram socket and the receive buffer the kernel granted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()  # a stale socket of a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    if owner or group:
        os.chown(
            path,
            pwd.getpwnam(owner).pw_uid if owner else -1,
            grp.getgrnam(group).gr_gid if group else -1,
        )
    sock.setblocking(False)
    return sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class DatagramIntake:
    """Counts what arrives, by its bytes; :func:`store_counts` parses and stores.

    An MTA sends the same bytes for every successful session to one domain, so a
    datagram costs the reader one ``recv`` and one dictionary increment. Parsing and
    storing happen in another process (:class:`ProcessPoolExecutor`), so neither the
    database nor Python's global lock ever keeps the reader from the socket.
    """

    def __init__(self, url: str, source: str, keep_malformed: Path | None = None) -> None:
        self.url = url
        self.source = source
        self.keep_malformed = keep_malformed
        self.batch: dict[tuple[dt.date, bytes], int] = {}
        self.received = 0
        self.totals = {"received": 0, "malformed": 0, "sessions": 0}
        self.last_error: str | None = None

    def take(self, data: bytes, day: dt.date) -> None:
        self.received += 1
        key = (day, data)
        self.batch[key] = self.batch.get(key, 0) + 1

    def detach(self) -> tuple[dict[tuple[dt.date, bytes], int], int]:
        batch, received = self.batch, self.received
        self.batch, self.received = {}, 0
        return batch, received

    def settle(self, totals: dict[str, Any]) -> None:
        for key in ("received", "malformed", "sessions"):
            self.totals[key] += int(totals[key])
        if totals.get("last_error"):
            self.last_error = str(totals["last_error"])


_STORES: dict[str, ReporterStore] = {}


def store_counts(
    url: str,
    source: str,
    keep_malformed: Path | None,
    batch: dict[tuple[dt.date, bytes], int],
    received: int,
) -> dict[str, Any]:
    """In the storing process: parse each distinct datagram once, store the sessions with
    their counts and the intake counters in one transaction, keep malformed ones."""
    store = _STORES.get(url)
    if store is None:
        from mtasts.reports.store import open_store

        store = _STORES[url] = ReporterStore(open_store(url).engine)
    sessions: list[tuple[dt.datetime, Session]] = []
    counts: list[int] = []
    malformed, error, kept = 0, None, 0
    for (day, data), count in batch.items():
        try:
            session = parse_datagram(data)
        except DatagramError as exc:
            malformed += count
            error = f"malformed datagram: {exc}"[:300]
            if keep_malformed is not None and kept < _KEEP_AT_MOST:
                kept += 1
                keep_malformed.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256(data).hexdigest()[:16]
                (keep_malformed / f"{day:%Y%m%d}-{digest}.dgram").write_bytes(data[:MAX_DATAGRAM])
            continue
        sessions.append((dt.datetime.combine(day, dt.time(12), dt.UTC), session))
        counts.append(count)
    if error is not None:
        log.warning("%s (%d in this batch)", error, malformed)
    store.add_sessions(
        sessions,
        counts=counts,
        source=source,
        received=received,
        malformed=malformed,
        last_error=error,
    )
    return {
        "received": received,
        "malformed": malformed,
        "sessions": sum(counts),
        "last_error": error,
    }


def read_datagrams(
    sock: socket.socket,
    intake: DatagramIntake,
    stop: threading.Event,
    storer: Executor | None = None,
) -> None:
    """Read until ``stop`` (in a thread of its own), hand each second's counts to ``storer``
    (a process of its own by default), and store what is left at the end."""
    sock.setblocking(True)
    sock.settimeout(0.2)
    own = storer is None
    if storer is None:
        # spawn, not fork: this process has threads, and a forked child would inherit locks.
        storer = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pending: Future[dict[str, Any]] | None = None
    last = time.monotonic()
    day = dt.datetime.now(dt.UTC).date()
    receive = sock.recv
    take = intake.take
    monotonic = time.monotonic
    try:
        # Every datagram costs a recv, a dict increment and two cheap checks; a trickle of
        # datagrams still gets stored within a second and a stop is seen at once.
        while not stop.is_set():
            try:  # noqa: SIM105  (a with-block per datagram costs more in this loop)
                take(receive(MAX_DATAGRAM + 1), day)
            except TimeoutError:
                pass
            crowded = len(intake.batch) > _MAX_DISTINCT  # a flood of distinct (hostile?) bytes
            if not crowded and (
                monotonic() - last < _FLUSH_SECONDS or not (pending is None or pending.done())
            ):
                continue
            day = dt.datetime.now(dt.UTC).date()
            if pending is not None:
                _settle(pending, intake)
            batch, received = intake.detach()
            pending = (
                storer.submit(
                    store_counts, intake.url, intake.source, intake.keep_malformed, batch, received
                )
                if received
                else None
            )
            last = monotonic()
    finally:
        if pending is not None:
            _settle(pending, intake)
        sock.setblocking(False)
        while True:  # what arrived before the stop is stored before the process ends
            try:
                take(sock.recv(MAX_DATAGRAM + 1), dt.datetime.now(dt.UTC).date())
            except (BlockingIOError, InterruptedError, OSError):
                break
        batch, received = intake.detach()
        if received:
            _settle(
                storer.submit(
                    store_counts, intake.url, intake.source, intake.keep_malformed, batch, received
                ),
                intake,
            )
        if own:
            storer.shutdown()


def _settle(pending: Future[dict[str, Any]], intake: DatagramIntake) -> None:
    try:
        intake.settle(pending.result())
    except Exception as exc:  # a busy database: that second's sessions are lost, not the rest
        log.error("storing a batch of sessions failed: %s", exc)
