"""What the resolver told Postfix about each domain, and since when (for the reporter).

A Postfix before 3.10 logs a TLS session but not the MTA-STS policy it applied.
The resolver knows: it keeps one row per change of its answer for a domain
(policy, none, or why the policy could not be used), so ``mtasts tlsrpt collect``
can join a logged session with the policy in force at that moment. A row is
written only when the answer changes, never per lookup.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from mtasts.files import private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    domain TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    policy_id TEXT,
    policy TEXT,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (domain, at)
)
"""
# kind: "policy" (a policy applies; its text is kept), "tlsa" (DANE applies; each MX host's
# TLSA records are kept, one "HOST RDATA" line each), "none" (no policy), or the RFC 8460
# §4.3.2.2 result type of a policy that could not be used: sts-policy-fetch-error,
# sts-policy-invalid, sts-webpki-invalid.
_REMEMBERED = 100_000
KEEP_SECONDS = 31 * 86400  # answers older than this, and since replaced, are pruned


@dataclass(frozen=True, slots=True)
class Answer:
    domain: str
    at: float
    kind: str
    policy_id: str | None
    policy: str | None
    reason: str


class AnswerLog:
    """Appends answers as they change; reads the answer in force at a moment."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            private_file(path)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        self._last: OrderedDict[str, tuple[str, str | None, str, str | None]] = OrderedDict()

    def record(
        self,
        domain: str,
        at: float,
        kind: str,
        policy_id: str | None,
        policy: str | None,
        reason: str,
    ) -> bool:
        """Write the answer if it differs from the last one written for ``domain``."""
        # A TLSA rollover changes the records, not the kind: the text is part of the answer.
        key = (
            kind,
            policy_id,
            reason if kind not in ("policy", "none", "tlsa") else "",
            policy if kind == "tlsa" else None,
        )
        if self._last.get(domain) == key:
            self._last.move_to_end(domain)
            return False
        self._last[domain] = key
        while len(self._last) > _REMEMBERED:
            self._last.popitem(last=False)
        self._db.execute(
            "INSERT OR REPLACE INTO answers (domain, at, kind, policy_id, policy, reason)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (domain, at, kind, policy_id, policy if kind in ("policy", "tlsa") else None, reason),
        )
        return True

    def at(self, domain: str, moment: float) -> Answer | None:
        """The answer in force for ``domain`` at ``moment`` (a second of slack: syslog time
        stamps are whole seconds, the answer came just before the connection)."""
        try:
            row = self._db.execute(
                "SELECT domain, at, kind, policy_id, policy, reason FROM answers"
                " WHERE domain = ? AND at <= ? ORDER BY at DESC LIMIT 1",
                (domain, moment + 1.0),
            ).fetchone()
        except sqlite3.OperationalError:
            return None  # the resolver has not created the table yet
        return Answer(*row) if row else None

    def prune(self, before: float) -> int:
        """Forget answers that stopped being in force before ``before``; returns how many.

        Each domain's latest answer stays, however old (it is still the one in force). The
        reporter joins sessions from the last day or so (RFC 8460 §4.1 reports cover one
        UTC day), so a month of history (:data:`KEEP_SECONDS`) is ample.
        """
        cursor = self._db.execute(
            "DELETE FROM answers WHERE at < ? AND at <"
            " (SELECT MAX(later.at) FROM answers AS later WHERE later.domain = answers.domain)",
            (before,),
        )
        return cursor.rowcount

    def close(self) -> None:
        self._db.close()
