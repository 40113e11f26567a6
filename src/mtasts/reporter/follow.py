"""Following Postfix's mail log (a file that gets rotated, or journald) into stored sessions.

The position (the file's inode and the byte offset after the last line read, or
journald's cursor) is stored in the same transaction as the sessions those lines
gave, so a restart neither loses a line nor counts one twice. On a restart the
reader re-reads up to 256 KiB before the position to recover each ``smtp``
process's TLS state, and counts only deliveries after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtasts.check.judge import classify
from mtasts.net.smtp import probe_mx
from mtasts.resolver.answers import Answer, AnswerLog
from mtasts.tlsrpt.datagram import Session
from mtasts.tlsrpt.model import ResultType

from .join import Confirmed, join, needs_confirmation
from .postfix_log import LoggedSession, PostfixLogReader
from .store import ReporterStore

log = logging.getLogger("mtasts.reporter")
_REWIND = 256 * 1024
_CHUNK = 1024 * 1024
_CONFIRM_FOR = 3600.0  # seconds a probe's verdict on an (MX, address) is reused


@dataclass
class Joiner:
    """Turns logged sessions into RFC 8460 sessions: the resolver's answers, the probes."""

    answers: AnswerLog | None
    skip_senders: frozenset[str]
    confirm: bool = True
    smtp_port: int = 25
    ca_file: Path | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self._confirmed: dict[tuple[str, str], tuple[float, Confirmed | None]] = {}

    def answer(self, logged: LoggedSession) -> Answer | None:
        if self.answers is None:
            return None
        return self.answers.at(logged.recipient_domain, logged.at.timestamp())

    async def confirmed(self, logged: LoggedSession) -> Confirmed | None:
        key = (logged.mx_host, logged.address)
        now = asyncio.get_running_loop().time()
        seen = self._confirmed.get(key)
        if seen is not None and now - seen[0] < _CONFIRM_FOR:
            return seen[1]
        probe = await probe_mx(
            logged.mx_host,
            logged.address,
            port=self.smtp_port,
            ca_file=self.ca_file,
            timeout=self.timeout,
        )
        code, why = classify(logged.mx_host, probe)
        verdict: Confirmed | None
        if isinstance(code, ResultType):
            verdict = Confirmed(code, why)
        elif probe.error_kind is None:
            verdict = Confirmed(None)
        else:
            verdict = None  # unreachable from here: nothing can be said about the name
        if len(self._confirmed) > 10_000:
            self._confirmed.clear()
        self._confirmed[key] = (now, verdict)
        return verdict

    async def sessions(self, logged: list[LoggedSession]) -> list[tuple[dt.datetime, Session]]:
        counted = [
            (item, self.answer(item))
            for item in logged
            # §3: report mail is not counted in the next report
            if item.sender is None or item.sender not in self.skip_senders
        ]
        # Each (MX, address) a batch needs confirmed is probed once, all of them at once.
        wanted = {
            (item.mx_host, item.address): item
            for item, answer in counted
            if self.confirm and needs_confirmation(item, answer)
        }
        limit = asyncio.Semaphore(20)

        async def one(item: LoggedSession) -> Confirmed | None:
            async with limit:
                return await self.confirmed(item)

        verdicts = dict(
            zip(wanted, await asyncio.gather(*(one(i) for i in wanted.values())), strict=True)
        )
        return [
            (
                item.at,
                join(
                    item,
                    answer,
                    verdicts.get((item.mx_host, item.address))
                    if self.confirm and needs_confirmation(item, answer)
                    else None,  # a verified session is never judged by another's probe
                ),
            )
            for item, answer in counted
        ]


def _lines(handle: Any, start: int, end: int | None = None) -> Iterator[tuple[int, str]]:
    """(offset after the line, line) for each whole line from ``start``."""
    handle.seek(start)
    offset = start
    while True:
        line = handle.readline()
        if not line or not line.endswith(b"\n"):
            return  # a half-written last line is read on the next pass
        offset += len(line)
        if end is not None and offset > end:
            return
        yield offset, line.decode("utf-8", "replace").rstrip("\n")


class LogFollower:
    """One mail log file; :meth:`poll` reads what was appended (or rotated) since last time."""

    def __init__(
        self, path: Path, store: ReporterStore, joiner: Joiner, reader: PostfixLogReader
    ) -> None:
        self.path = path
        self.store = store
        self.joiner = joiner
        self.reader = reader
        self.source = f"log:{path}"
        saved = store.position(self.source)
        self.inode: int | None = saved.get("inode")
        self.offset: int = int(saved.get("offset", 0))
        self._warmed = False
        self.sessions = 0  # counted by this process

    def _rotated_file(self) -> Path | None:
        """The file the saved inode now lives in (``maillog.1`` after a rename rotation)."""
        if self.inode is None:
            return None
        for candidate in sorted(self.path.parent.glob(self.path.name + "*")):
            try:
                if candidate.stat().st_ino == self.inode and candidate != self.path:
                    return candidate
            except OSError:
                continue
        return None

    async def _read(self, path: Path, inode: int) -> int:
        """Read ``path`` from the saved offset to its end and store what it gave."""
        sessions: list[LoggedSession] = []
        lines = 0
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < self.offset:
                self.offset = 0  # truncated in place (copytruncate): start over
            if not self._warmed and self.offset:
                # Rebuild each smtp process's TLS state from the lines before the position.
                for _end, line in _lines(handle, max(0, self.offset - _REWIND), self.offset):
                    self.reader.feed(line)
                self._warmed = True
            self._warmed = True
            offset = self.offset
            for offset, line in _lines(handle, self.offset):
                lines += 1
                found = self.reader.feed(line)
                if found is not None:
                    sessions.append(found)
                if lines % 50_000 == 0:
                    await self._store(sessions, inode, offset, lines)
                    sessions, lines = [], 0
            await self._store(sessions, inode, offset, lines)
        return lines

    async def _store(
        self, logged: list[LoggedSession], inode: int, offset: int, lines: int
    ) -> None:
        joined = await self.joiner.sessions(logged)
        self.sessions += len(joined)
        if lines or joined or inode != self.inode:
            await asyncio.to_thread(
                self.store.add_sessions,
                joined,
                source=self.source,
                position={"inode": inode, "offset": offset},
                received=lines,
            )
        self.inode, self.offset = inode, offset

    async def poll(self) -> int:
        """Read new lines; returns how many were read."""
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            return 0
        read = 0
        if self.inode is not None and inode != self.inode:
            old = self._rotated_file()
            if old is not None:
                read += await self._read(old, self.inode)  # the rotated file's last lines
            self.offset = 0
        read += await self._read(self.path, inode)
        return read


class JournalFollower:
    """journald's Postfix messages through ``journalctl -o json``, resumed by cursor."""

    def __init__(self, store: ReporterStore, joiner: Joiner, reader: PostfixLogReader) -> None:
        self.store = store
        self.joiner = joiner
        self.reader = reader
        self.source = "journal"
        self.cursor: str | None = store.position(self.source).get("cursor")
        self.sessions = 0

    def feed_entry(self, entry: dict[str, Any]) -> LoggedSession | None:
        program = str(entry.get("SYSLOG_IDENTIFIER", ""))
        if not program.startswith("postfix"):
            return None
        stamp = int(entry.get("__REALTIME_TIMESTAMP", "0")) / 1e6
        at = dt.datetime.fromtimestamp(stamp, dt.UTC)
        return self.reader.feed_message(
            at,
            program,
            str(entry.get("SYSLOG_PID", entry.get("_PID", ""))),
            str(entry.get("MESSAGE", "")),
        )

    async def poll(self) -> int:
        command = [
            "journalctl",
            "--output=json",
            "--no-pager",
            "--identifier=postfix/smtp",
            "--identifier=postfix/qmgr",
        ]
        command += [f"--after-cursor={self.cursor}"] if self.cursor else ["--since=today"]
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, timeout=300, check=False
        )
        if done.returncode:
            raise RuntimeError(
                f"journalctl failed: {done.stderr.decode('utf-8', 'replace').strip()[:200]}"
            )
        logged: list[LoggedSession] = []
        lines = 0
        for raw in done.stdout.splitlines():
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                continue
            lines += 1
            found = self.feed_entry(entry)
            if found is not None:
                logged.append(found)
            self.cursor = str(entry.get("__CURSOR", self.cursor))
        if lines:
            joined = await self.joiner.sessions(logged)
            self.sessions += len(joined)
            await asyncio.to_thread(
                self.store.add_sessions,
                joined,
                source=self.source,
                position={"cursor": self.cursor},
                received=lines,
            )
        return lines
