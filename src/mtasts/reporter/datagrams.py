"""The libtlsrpt socket: a Unix datagram socket Postfix 3.10+ writes one session to at a time.

libtlsrpt sends without waiting (``MSG_DONTWAIT``): when our queue is full the datagram
is dropped on the MTA's side, which is never blocked. The queue holds at most
``net.unix.max_dgram_qlen`` datagrams (Linux's default: 10) and ``SO_RCVBUF`` bytes, so
the socket asks for a large buffer (``SO_RCVBUFFORCE`` as root, else ``SO_RCVBUF`` up to
``rmem_max``), a thread does nothing but read and count, and sessions reach the
database from another thread once a second, so a slow disk never stops the reading.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import logging
import os
import pwd
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mtasts.tlsrpt.datagram import MAX_DATAGRAM, DatagramError, parse_datagram

from .store import ReporterStore

log = logging.getLogger("mtasts.reporter")

RECEIVE_BUFFER = 32 * 1024 * 1024
_FLUSH_SECONDS = 1.0
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
    """Reads, parses and counts; :meth:`flush` stores what was read since the last flush.

    An MTA sends the same bytes for every successful session to one domain, so each
    distinct datagram of a batch is parsed once and then only counted: the cost of a
    datagram is one ``recv`` and one dictionary lookup.
    """

    def __init__(
        self, store: ReporterStore, source: str, keep_malformed: Path | None = None
    ) -> None:
        self.store = store
        self.source = source
        self.keep_malformed = keep_malformed
        self.batch: dict[tuple[dt.date, bytes], list[Any]] = {}  # -> [session, count, when]
        self.received = self.malformed = self.kept = 0
        self.last_error: str | None = None
        self.totals = {"received": 0, "malformed": 0, "sessions": 0}

    def take(self, data: bytes, now: dt.datetime) -> None:
        self.received += 1
        key = (now.date(), data)
        entry = self.batch.get(key)
        if entry is not None:
            entry[1] += 1
            return
        try:
            self.batch[key] = [parse_datagram(data), 1, now]
        except DatagramError as exc:
            self.malformed += 1
            self.last_error = f"malformed datagram: {exc}"[:300]
            if self.keep_malformed is not None and self.kept < _KEEP_AT_MOST:
                self.kept += 1
                self.keep_malformed.mkdir(parents=True, exist_ok=True)
                name = f"{now:%Y%m%dT%H%M%S}-{self.kept:04d}.dgram"
                (self.keep_malformed / name).write_bytes(data[:MAX_DATAGRAM])
            if self.malformed <= 10 or self.malformed % 1000 == 0:
                log.warning("%s (%d so far)", self.last_error, self.malformed)

    def detach(self) -> DatagramIntake:
        """What was read so far, as a batch of its own to flush from another thread."""
        batch = DatagramIntake(self.store, self.source)
        batch.batch, self.batch = self.batch, {}
        batch.received, batch.malformed, batch.last_error = (
            self.received,
            self.malformed,
            self.last_error,
        )
        self.received = self.malformed = 0
        self.last_error = None
        return batch

    def flush(self) -> int:
        entries = list(self.batch.values())
        self.batch = {}
        received, malformed, error = self.received, self.malformed, self.last_error
        if not entries and not received:
            return 0
        self.received = self.malformed = 0
        self.last_error = None
        sessions = [(when, session) for session, _count, when in entries]
        self.store.add_sessions(
            sessions,
            counts=[count for _session, count, _when in entries],
            source=self.source,
            received=received,
            malformed=malformed,
            last_error=error,
        )
        stored = int(sum(count for _session, count, _when in entries))
        self.totals["received"] += received
        self.totals["malformed"] += malformed
        self.totals["sessions"] += stored
        return stored


def read_datagrams(sock: socket.socket, intake: DatagramIntake, stop: threading.Event) -> None:
    """Read until ``stop`` (in a thread of its own: nothing else runs between two reads);
    a second thread stores each second's batch, and what is left is stored at the end."""
    sock.setblocking(True)
    sock.settimeout(0.2)
    flusher = ThreadPoolExecutor(1, thread_name_prefix="tlsrpt-store")
    pending: Future[dict[str, int]] | None = None
    last = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    try:
        while not stop.is_set():
            try:
                intake.take(sock.recv(MAX_DATAGRAM + 1), now)
                count = intake.received
            except TimeoutError:
                count = -1
            if count % 256 == 0 or count < 0:
                now = dt.datetime.now(dt.UTC)
                if time.monotonic() - last >= _FLUSH_SECONDS and (
                    pending is None or pending.done()
                ):
                    if pending is not None:
                        _settle(pending, intake)
                    pending = flusher.submit(_flush, intake.detach())
                    last = time.monotonic()
    finally:
        if pending is not None:
            _settle(pending, intake)
        sock.setblocking(False)
        while True:  # what arrived before the stop is stored before the process ends
            try:
                intake.take(sock.recv(MAX_DATAGRAM + 1), dt.datetime.now(dt.UTC))
            except (BlockingIOError, InterruptedError, OSError):
                break
        intake.flush()
        flusher.shutdown()


def _flush(batch: DatagramIntake) -> dict[str, int]:
    batch.flush()
    return batch.totals


def _settle(pending: Future[dict[str, int]], intake: DatagramIntake) -> None:
    try:
        totals = pending.result()
    except Exception as exc:  # a busy database: that second's sessions are lost, not the rest
        log.error("storing a batch of sessions failed: %s", exc)
        return
    for key, value in totals.items():
        intake.totals[key] += value
