"""Politeness: how many probes may be open at once, and how often one may start, per MX
address and per mail provider — across every worker of every machine, not per process.

Connections per address are capped by the engine, not here: each probe job holds one
address's pairs, probes them one after another, and carries a key ``address#slot`` that
no two running jobs share (:func:`.plan.probe_jobs`), so a busy address never occupies a
worker that could probe another. What is left here is the per-address rate and the
per-provider concurrency and rate.

On PostgreSQL these limits live in the database: a concurrency slot is a session advisory
lock (``pg_try_advisory_lock(hashtext(key), slot)``), which PostgreSQL itself releases when
a killed worker's connection drops; a rate is a row per key holding the earliest time the
next probe may start, advanced atomically by each taker. :class:`LocalPoliteness` does the
same within one process (the SQLite and in-memory engine tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from .plan import Pair, provider_of


@dataclass(frozen=True, slots=True)
class Limits:
    per_address: int = 2  # probes open at once to one MX address
    address_rate: float = 5.0  # probes started per second per address (0: no limit)
    per_provider: int = 20  # probes open at once to one provider's MX hosts
    provider_rate: float = 0.0  # probes started per second per provider (0: no limit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_address": self.per_address,
            "address_rate": self.address_rate,
            "per_provider": self.per_provider,
            "provider_rate": self.provider_rate,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Limits:
        return cls(
            int(raw.get("per_address", 2)),
            float(raw.get("address_rate", 5.0)),
            int(raw.get("per_provider", 20)),
            float(raw.get("provider_rate", 0.0)),
        )


def _keys(pair: Pair, limits: Limits) -> list[tuple[str, int, float]]:
    """(key, concurrent, rate) for each limit that applies to ``pair``, provider first (a
    fixed order, so no two takers wait for each other's second key forever); concurrent 0:
    no slot to take (the address's, which the engine's job keys hold)."""
    host, address = pair
    return [
        (f"provider:{provider_of(host)}", limits.per_provider, limits.provider_rate),
        (f"address:{address}", 0, limits.address_rate),
    ]


class Politeness(Protocol):
    def slot(self, pair: Pair, limits: Limits) -> contextlib.AbstractAsyncContextManager[None]: ...


class LocalPoliteness:
    """Limits within one process."""

    def __init__(self) -> None:
        self._open: dict[str, asyncio.Semaphore] = {}
        self._next: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def slot(self, pair: Pair, limits: Limits) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for key, concurrent, rate in _keys(pair, limits):
                if concurrent:
                    semaphore = self._open.setdefault(key, asyncio.Semaphore(concurrent))
                    await stack.enter_async_context(semaphore)
                if rate > 0:
                    now = time.monotonic()
                    start = max(self._next.get(key, 0.0), now)
                    self._next[key] = start + 1 / rate
                    await asyncio.sleep(start - now)
            yield


class PgPoliteness:
    """Limits across every worker sharing one PostgreSQL database."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._connection: Any = None
        self._lock = asyncio.Lock()  # one connection: one statement at a time
        self._held: dict[str, set[int]] = {}  # slots this process holds (advisory locks re-enter)

    async def open(self) -> None:
        import psycopg

        self._connection = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _one(self, query: str, *params: Any) -> Any:
        async with self._lock:
            cursor = await self._connection.execute(query, params)
            return await cursor.fetchone()

    async def _take(self, key: str, concurrent: int) -> int:
        delay = 0.01
        while True:
            held = self._held.setdefault(key, set())
            for slot in range(max(1, concurrent)):
                if slot in held:
                    continue
                # Reserved here before asking: this session's locks re-enter, so two of our
                # own coroutines asking for one slot would both be granted it.
                held.add(slot)
                row = await self._one("SELECT pg_try_advisory_lock(hashtext(%s), %s)", key, slot)
                if row[0]:
                    return slot
                held.discard(slot)
            # Every slot is open somewhere: wait a little, longer each time, with jitter so
            # the workers do not all knock at once.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.05)

    async def _give(self, key: str, slot: int) -> None:
        self._held.get(key, set()).discard(slot)
        await self._one("SELECT pg_advisory_unlock(hashtext(%s), %s)", key, slot)

    async def _pace(self, key: str, rate: float) -> None:
        gap = 1 / rate
        row = await self._one(
            "INSERT INTO scan_pace (key, next_at)"
            " VALUES (%s, extract(epoch from clock_timestamp()) + %s)"
            " ON CONFLICT (key) DO UPDATE SET next_at ="
            " greatest(scan_pace.next_at, extract(epoch from clock_timestamp())) + %s"
            " RETURNING next_at - %s - extract(epoch from clock_timestamp())",
            key,
            gap,
            gap,
            gap,
        )
        wait = float(row[0])
        if wait > 0:
            await asyncio.sleep(wait)

    @contextlib.asynccontextmanager
    async def slot(self, pair: Pair, limits: Limits) -> AsyncIterator[None]:
        taken: list[tuple[str, int]] = []
        try:
            for key, concurrent, rate in _keys(pair, limits):
                if concurrent:
                    taken.append((key, await self._take(key, concurrent)))
                if rate > 0:
                    await self._pace(key, rate)
            yield
        finally:
            for key, slot in reversed(taken):
                with contextlib.suppress(Exception):
                    await self._give(key, slot)
