"""The libtlsrpt socket: a Unix datagram socket Postfix 3.10+ writes one session to at a time.

libtlsrpt sends without waiting (``MSG_DONTWAIT``): when our receive buffer is full the
datagram is dropped on the MTA's side, which is never blocked. So the socket asks for
a large buffer (``SO_RCVBUFFORCE`` as root, else ``SO_RCVBUF`` up to the kernel's
``rmem_max``), the loop only reads and parses, and sessions reach the database in
batches from a thread, so a slow disk never stops the reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import logging
import os
import pwd
import socket
from pathlib import Path

from mtasts.tlsrpt.datagram import MAX_DATAGRAM, DatagramError, Session, parse_datagram

from .store import ReporterStore

log = logging.getLogger("mtasts.reporter")

RECEIVE_BUFFER = 32 * 1024 * 1024
_FLUSH_SECONDS = 1.0
_FLUSH_SESSIONS = 5_000
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
    """Reads, parses and counts; :meth:`flush` stores what was read since the last flush."""

    def __init__(
        self, store: ReporterStore, source: str, keep_malformed: Path | None = None
    ) -> None:
        self.store = store
        self.source = source
        self.keep_malformed = keep_malformed
        self.sessions: list[tuple[dt.datetime, Session]] = []
        self.received = self.malformed = self.kept = 0
        self.last_error: str | None = None
        self.totals = {"received": 0, "malformed": 0, "sessions": 0}

    def take(self, data: bytes, now: dt.datetime) -> None:
        self.received += 1
        try:
            self.sessions.append((now, parse_datagram(data)))
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

    def flush(self) -> int:
        sessions, self.sessions = self.sessions, []
        received, malformed, error = self.received, self.malformed, self.last_error
        if not sessions and not received:
            return 0
        self.received = self.malformed = 0
        self.last_error = None
        self.store.add_sessions(
            sessions, source=self.source, received=received, malformed=malformed, last_error=error
        )
        self.totals["received"] += received
        self.totals["malformed"] += malformed
        self.totals["sessions"] += len(sessions)
        return len(sessions)


async def serve_datagrams(sock: socket.socket, intake: DatagramIntake, stop: asyncio.Event) -> None:
    """Read until ``stop``; flush every second (or every 5,000 sessions) and at the end."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(sock.fileno(), readable.set)
    pending: asyncio.Future[int] | None = None
    last_flush = loop.time()
    try:
        while not stop.is_set():
            readable.clear()
            now = dt.datetime.now(dt.UTC)
            while True:
                try:
                    data = sock.recv(MAX_DATAGRAM + 1)
                except (BlockingIOError, InterruptedError):
                    break
                intake.take(data, now)
                if len(intake.sessions) >= _FLUSH_SESSIONS:
                    break
            due = loop.time() - last_flush >= _FLUSH_SECONDS
            if (due or len(intake.sessions) >= _FLUSH_SESSIONS) and (
                pending is None or pending.done()
            ):
                if pending is not None:
                    pending.result()
                batch = DatagramIntake(intake.store, intake.source)
                batch.sessions, intake.sessions = intake.sessions, []
                batch.received, batch.malformed = intake.received, intake.malformed
                batch.last_error = intake.last_error
                intake.received = intake.malformed = 0
                intake.last_error = None
                pending = loop.run_in_executor(None, _flush_into, batch, intake)
                last_flush = loop.time()
            if len(intake.sessions) < _FLUSH_SESSIONS:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_FLUSH_SECONDS):
                        await asyncio.wait(
                            [
                                asyncio.ensure_future(readable.wait()),
                                asyncio.ensure_future(stop.wait()),
                            ],
                            return_when=asyncio.FIRST_COMPLETED,
                        )
            else:
                await asyncio.sleep(0)
    finally:
        loop.remove_reader(sock.fileno())
        if pending is not None:
            await pending
        # What arrived before the stop is stored before the process ends.
        while True:
            try:
                intake.take(sock.recv(MAX_DATAGRAM + 1), dt.datetime.now(dt.UTC))
            except (BlockingIOError, InterruptedError, OSError):
                break
        intake.flush()


def _flush_into(batch: DatagramIntake, intake: DatagramIntake) -> int:
    stored = batch.flush()
    for key, value in batch.totals.items():
        intake.totals[key] += value
    return stored
