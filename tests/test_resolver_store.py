"""The resolver's cache backends pass the same tests: SQLite (one MTA) and PostgreSQL (shared)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mtasts.resolver.daemon import make_store
from mtasts.resolver.store import PolicyStore
from mtasts.sts import Mode, MxPattern, Policy
from mtasts.sts.cache import CachedPolicy

from .conftest import RunningLab
from .test_resolver import SOCKETMAP_PORT, ask, start_daemon

POLICY = Policy(Mode.ENFORCE, 604800, (MxPattern("mx.example.com"), MxPattern("example.net", True)))


@pytest.fixture(params=["sqlite", "postgres"])
def cache_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "cache.sqlite")
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS mtasts_resolver_policies")


async def _open(location: str) -> PolicyStore:
    store = make_store(location)
    await store.open()
    return store


def test_policies_survive_a_restart(cache_location: str) -> None:
    async def run() -> None:
        first = await _open(cache_location)
        first.put(CachedPolicy("example.com", POLICY, "id1", 1000.0))
        first.put(CachedPolicy("example.org", Policy(Mode.NONE, 86400), "id2", 1001.0))
        first.put(CachedPolicy("example.com", POLICY, "id3", 1002.0))  # replaces
        await first.aclose()
        second = await _open(cache_location)
        assert second.get("example.com") == CachedPolicy("example.com", POLICY, "id3", 1002.0)
        assert second.get("example.org") is not None
        assert len(second) == 2
        await second.aclose()

    asyncio.run(run())


def test_load_sees_what_another_mta_fetched(cache_location: str) -> None:
    async def run() -> None:
        mta_a = await _open(cache_location)
        mta_b = await _open(cache_location)
        mta_a.put(CachedPolicy("example.com", POLICY, "id9", 5000.0))
        await mta_a.aclose()
        loaded = await mta_b.load("example.com")
        shared = cache_location.startswith("postgresql://")
        # SQLite is one MTA's own file; PostgreSQL is shared, so B sees A's fetch without fetching.
        assert (loaded is not None) is shared
        await mta_b.aclose()

    asyncio.run(run())


def test_older_write_never_replaces_a_newer_one(postgres_url: str) -> None:
    async def run() -> None:
        store = await _open(postgres_url)
        store.put(CachedPolicy("example.com", POLICY, "new", 2000.0))
        await store.aclose()
        late = await _open(postgres_url)
        late._policies.clear()
        late.put(CachedPolicy("example.com", POLICY, "old", 1000.0))
        await late.aclose()
        check = await _open(postgres_url)
        assert check.get("example.com").policy_id == "new"  # type: ignore[union-attr]
        await check.aclose()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP TABLE mtasts_resolver_policies")

    asyncio.run(run())


def test_two_resolvers_share_one_postgres_cache(
    lab: RunningLab, postgres_url: str, tmp_path: Path
) -> None:
    first = start_daemon(tmp_path, "--lab", str(lab.state_dir), "--cache", postgres_url)
    try:
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
            assert ask(sock, "good-enforce.example").startswith("OK secure")
    finally:
        first.stop()
    # The second MTA cannot reach DNS or the policy host, yet it enforces: the policy is shared.
    second = start_daemon(
        tmp_path, "--cache", postgres_url, "--nameserver", "127.0.0.1:9", "--timeout", "1"
    )
    try:
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
            assert ask(sock, "good-enforce.example").startswith(
                "OK secure match=mx1.good-enforce.example"
            )
    finally:
        second.stop()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS mtasts_resolver_policies")
