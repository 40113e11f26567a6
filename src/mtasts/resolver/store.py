"""The policy cache: a dict in memory, written through to SQLite (default) or PostgreSQL.

SQLite keeps one MTA's cache across restarts and is shared by the resolver's worker
processes (a lookup missing from memory reads the file); PostgreSQL lets several
MTAs share one cache, so a policy fetched by one is used by all.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from mtasts.files import private_file
from mtasts.sts import PolicyError, parse_policy
from mtasts.sts.cache import CachedPolicy

log = logging.getLogger("mtasts.resolver.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    domain TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched_at REAL NOT NULL
)
"""

# Whichever fetch is newer stays when two processes write the same domain.
_UPSERT = """
INSERT INTO policies (domain, policy_id, policy, fetched_at) VALUES (?, ?, ?, ?)
ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, policy = excluded.policy,
    fetched_at = excluded.fetched_at
WHERE policies.fetched_at < excluded.fetched_at
"""


class PolicyStore:
    """Cached policies by domain. ``path`` None keeps them in memory only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._policies: dict[str, CachedPolicy] = {}
        self._db: sqlite3.Connection | None = None
        if path is not None:
            private_file(path)  # 0600 in a 0700 folder, before sqlite3 makes it 0644
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # A cache: losing the last writes to a power cut only means fetching those policies
            # again, so no fsync per write (which blocked the event loop for milliseconds).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._load()

    def _load(self, where: str = "", *args: str) -> None:
        """Read rows (all, or those ``where`` picks) into memory; a newer fetch wins."""
        assert self._db is not None
        for domain, policy_id, text, fetched_at in self._db.execute(
            f"SELECT domain, policy_id, policy, fetched_at FROM policies {where}", args
        ):
            try:
                policy = parse_policy(text)
            except PolicyError:
                continue  # written by a version that accepted it; it will be refetched
            mine = self._policies.get(domain)
            cached = CachedPolicy(domain, policy, policy_id, fetched_at)
            if mine is None or mine.fetched_at < fetched_at:
                self._policies[domain] = cached

    def get(self, domain: str) -> CachedPolicy | None:
        return self._policies.get(domain)

    def put(self, cached: CachedPolicy) -> None:
        self._policies[cached.domain] = cached
        if self._db is not None:
            row = (cached.domain, cached.policy_id, str(cached.policy), cached.fetched_at)
            try:
                self._db.execute(_UPSERT, row)
            except sqlite3.Error as exc:  # the memory still serves; say why the file did not
                log.warning("cannot write the cache domain=%s error=%s", cached.domain, exc)

    def remove(self, domain: str) -> None:
        self._policies.pop(domain, None)
        if self._db is not None:
            self._db.execute("DELETE FROM policies WHERE domain = ?", (domain,))

    def all(self) -> list[CachedPolicy]:
        return list(self._policies.values())

    def __len__(self) -> int:
        return len(self._policies)

    async def open(self) -> None:
        """Connect to a shared backend; nothing to do for memory and SQLite."""

    async def load(self, domain: str) -> CachedPolicy | None:
        """The freshest policy any process sharing this store fetched (the resolver's
        workers, or another resolver given the same file)."""
        if self._db is not None:
            try:
                self._load("WHERE domain = ?", domain)
            except sqlite3.Error as exc:  # what memory holds still serves
                log.warning("cannot read the cache domain=%s error=%s", domain, exc)
        return self.get(domain)

    async def sync(self) -> None:
        """Read what other processes wrote since (the refreshing worker's view of all)."""
        if self._db is not None:
            try:
                self._load()
            except sqlite3.Error as exc:
                log.warning("cannot read the cache error=%s", exc)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
