"""Several resolver processes on one port and one cache, supervised (issue #16).

One process answers cached lookups far faster than Postfix asks, but a burst of
cold lookups (a restart, a mailing to thousands of new domains) is bound by one
core: TLS handshakes, DNS and HTTP all run on its event loop. With ``workers``
above 1, each worker is a whole resolver and they share:

- the listeners, bound by the parent before the first fork (:mod:`.sockets`): an
  inet listener gets one SO_REUSEPORT socket per worker, so the kernel spreads
  Postfix's connections over them; a Unix listener is one socket all accept on;
- the policy cache, through its SQLite file or PostgreSQL: a policy one worker
  fetched is read by another from the store instead of being fetched again;
- the metrics: each worker posts its counters to a shared board every second and
  worker 0, which serves /metrics, adds them up.

Worker 0 alone refreshes policies and prunes the answer log, so no policy is
fetched twice for a refresh. The parent only supervises: it forwards SIGTERM,
SIGINT and SIGHUP (each worker rereads the configuration itself; the parent too, for
the workers it forks later) and replaces a worker that dies, giving up when they keep
dying.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .server import Counters

log = logging.getLogger("mtasts.resolver")

_SLOT = 64 * 1024  # bytes of board per worker: its counters as JSON
_HEAD = struct.Struct("!QI")  # sequence (odd while being written), length
_RESTARTS = 5  # deaths within _RESTART_WINDOW seconds before the parent gives up
_RESTART_WINDOW = 60.0


class Board:
    """Every worker's latest counters, in a mapping shared across fork (MAP_SHARED).

    A worker writes only its own slot; a reader retries a slot caught mid-write
    (odd sequence, or a sequence that moved while it read).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._map = mmap.mmap(-1, count * _SLOT)

    def post(self, index: int, counters: Counters) -> None:
        data = json.dumps(counters, separators=(",", ":")).encode()
        if len(data) > _SLOT - _HEAD.size:
            return  # cannot happen with bounded labels; an old post stays rather than a cut one
        base = index * _SLOT
        sequence, _ = _HEAD.unpack_from(self._map, base)
        _HEAD.pack_into(self._map, base, sequence + 1, 0)
        self._map[base + _HEAD.size : base + _HEAD.size + len(data)] = data
        _HEAD.pack_into(self._map, base, sequence + 2, len(data))

    def read(self, index: int) -> Counters:
        base = index * _SLOT
        for _ in range(100):
            sequence, length = _HEAD.unpack_from(self._map, base)
            data = self._map[base + _HEAD.size : base + _HEAD.size + length]
            if sequence % 2 == 0 and _HEAD.unpack_from(self._map, base)[0] == sequence:
                return json.loads(data) if length else {}
        return {}


@dataclass
class Place:
    """One worker's share: its number, its listening sockets (per configured listener,
    then the metrics listener, which only worker 0 holds) and the board."""

    index: int
    count: int
    listeners: list[list[socket.socket]]
    metrics: list[socket.socket] = field(default_factory=list)
    board: Board | None = None

    @property
    def leader(self) -> bool:
        """Worker 0 (or the only process): refreshes, prunes and serves the metrics."""
        return self.index == 0

    def holds(self, sock: socket.socket) -> bool:
        return any(sock is mine for own in (*self.listeners, self.metrics) for mine in own)


Bind = Callable[[int], tuple[list[list[socket.socket]], list[socket.socket]]]
Work = Callable[[Place], Coroutine[Any, Any, None]]


class Supervisor:
    """Forks ``count`` workers running ``work(place)`` and keeps that many alive.

    ``bind(index)`` makes a worker's sockets (in the parent, before any fork);
    ``run`` runs a worker's coroutine on a fresh event loop.
    """

    def __init__(
        self,
        count: int,
        bind: Bind,
        work: Work,
        run: Callable[[Coroutine[Any, Any, None]], None],
        reloaded: Callable[[], None] = lambda: None,
    ) -> None:
        self.count, self.work, self.run, self.reloaded = count, work, run, reloaded
        self.board = Board(count)
        self.places: list[Place] = []
        for index in range(count):
            listeners, metrics = bind(index)
            self.places.append(Place(index, count, listeners, metrics, self.board))
        self.children: dict[int, int] = {}  # pid -> worker index
        self.deaths: list[float] = []
        self.stopping = False

    def start(self) -> int:
        """Run until SIGTERM/SIGINT; the exit status for the parent."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        for place in self.places:
            self._fork(place)
        log.info("resolver workers=%d pids=%s", self.count, " ".join(map(str, self.children)))
        status = 0
        while self.children:
            try:
                pid, code = os.wait()
            except ChildProcessError:
                break
            index = self.children.pop(pid, None)
            if index is None or self.stopping:
                continue
            log.error(
                "resolver worker %d (pid %d) ended: %s; starting another", index, pid, _how(code)
            )
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < _RESTART_WINDOW] + [now]
            if len(self.deaths) > _RESTARTS:
                log.error(
                    "resolver workers died %d times within %.0f s: stopping",
                    len(self.deaths),
                    _RESTART_WINDOW,
                )
                self._stop(signal.SIGTERM, None)
                status = 1
                continue
            self._fork(self.places[index])
        return status

    def _fork(self, place: Place) -> None:
        # SIGHUP stays blocked in the new worker until its event loop handles it: one sent
        # before that waits instead of killing the worker (its default action).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        pid = os.fork()
        if pid:
            self.children[pid] = place.index
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            return
        code = 0
        try:
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(number, signal.SIG_DFL)
            # A worker keeps its own sockets only: each of the others is served by its own
            # worker, and the parent keeps them all for a worker it has to replace.
            for other in self.places:
                for own in (*other.listeners, other.metrics):
                    for sock in own:
                        if not place.holds(sock):
                            sock.close()
            self.run(self.work(place))
        except BaseException:  # a worker never returns into the parent's loop
            log.exception("resolver worker %d failed", place.index)
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)

    def _reload(self, number: int, _frame: object) -> None:
        self.reloaded()  # first, so a worker forked after this starts with it
        self._forward(number, None)

    def _stop(self, number: int, _frame: object) -> None:
        self.stopping = True
        self._forward(number, None)

    def _forward(self, number: int, _frame: object) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):  # it ended: os.wait will say how
                os.kill(pid, number)


def _how(code: int) -> str:
    if os.WIFSIGNALED(code):
        return f"killed by {signal.Signals(os.WTERMSIG(code)).name}"
    return f"exit status {os.waitstatus_to_exitcode(code)}"
