"""A policy cache several MTAs share, in PostgreSQL (psycopg 3, async)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mtasts.sts import PolicyError, parse_policy
from mtasts.sts.cache import CachedPolicy

from .store import PolicyStore

log = logging.getLogger("mtasts.resolver.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mtasts_resolver_policies (
    domain TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched_at DOUBLE PRECISION NOT NULL
)
"""
# Keep whichever fetch is newer when two MTAs write the same domain.
_UPSERT = """
INSERT INTO mtasts_resolver_policies (domain, policy_id, policy, fetched_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (domain) DO UPDATE SET policy_id = EXCLUDED.policy_id, policy = EXCLUDED.policy,
    fetched_at = EXCLUDED.fetched_at
WHERE mtasts_resolver_policies.fetched_at < EXCLUDED.fetched_at
"""


def _row(row: tuple[Any, ...]) -> CachedPolicy | None:
    domain, policy_id, text, fetched_at = row
    try:
        return CachedPolicy(domain, parse_policy(text), policy_id, float(fetched_at))
    except PolicyError:
        return None


class PostgresStore(PolicyStore):
    def __init__(self, url: str) -> None:
        super().__init__(None)
        self.url = url
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        import psycopg  # an optional dependency: only this backend needs it

        self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        async with self._lock:
            await self._conn.execute(_SCHEMA)
        await self._read_all()

    async def _read_all(self) -> None:
        async with self._lock:
            cursor = await self._conn.execute(
                "SELECT domain, policy_id, policy, fetched_at FROM mtasts_resolver_policies"
            )
            rows = await cursor.fetchall()
        for row in rows:
            cached = _row(row)
            mine = self._policies.get(cached.domain) if cached is not None else None
            if cached is not None and (mine is None or mine.fetched_at < cached.fetched_at):
                self._policies[cached.domain] = cached

    async def sync(self) -> None:
        try:
            await self._read_all()
        except Exception as exc:  # the memory still serves; a refresh covers what it holds
            log.warning("cannot read the shared cache error=%s", exc)

    def put(self, cached: CachedPolicy) -> None:
        self._policies[cached.domain] = cached
        task = asyncio.ensure_future(self._write(cached))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, cached: CachedPolicy) -> None:
        try:
            async with self._lock:
                await self._conn.execute(
                    _UPSERT,
                    (cached.domain, cached.policy_id, str(cached.policy), cached.fetched_at),
                )
        except Exception as exc:  # the cache in memory still serves; say why the share failed
            log.warning("cannot write the shared cache domain=%s error=%s", cached.domain, exc)

    async def load(self, domain: str) -> CachedPolicy | None:
        try:
            async with self._lock:
                cursor = await self._conn.execute(
                    "SELECT domain, policy_id, policy, fetched_at FROM mtasts_resolver_policies WHERE domain = %s",
                    (domain,),
                )
                row = await cursor.fetchone()
        except Exception as exc:
            log.warning("cannot read the shared cache domain=%s error=%s", domain, exc)
            return self.get(domain)
        shared = _row(row) if row else None
        mine = self.get(domain)
        if shared is not None and (mine is None or shared.fetched_at > mine.fetched_at):
            self._policies[domain] = shared
            return shared
        return mine

    def remove(self, domain: str) -> None:
        self._policies.pop(domain, None)

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
