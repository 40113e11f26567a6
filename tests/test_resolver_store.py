"""The resolver's cache backends pass the same tests: SQLite (one MTA) and PostgreSQL (shared)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import psycopg

from mtasts.resolver.daemon import make_store
from mtasts.resolver.store import PolicyStore
from mtasts.sts import Mode, MxPattern, Policy
from mtasts.sts.cache import CachedPolicy

from .conftest import RunningLab
from .test_resolver import SOCKETMAP_PORT, ask, start_daemon

POLICY = Policy(Mode.ENFORCE, 604800, (MxPattern("mx.example.com"), MxPattern("example.net", True)))


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
        # Both share: PostgreSQL between MTAs, the SQLite file between one resolver's workers
        # (or two resolvers given the same file). B sees A's fetch without fetching.
        assert await mta_b.load("example.com") == CachedPolicy("example.com", POLICY, "id9", 5000.0)
        await mta_b.aclose()

    asyncio.run(run())


def test_older_write_never_replaces_a_newer_one(cache_location: str) -> None:
    async def run() -> None:
        store = await _open(cache_location)
        store.put(CachedPolicy("example.com", POLICY, "new", 2000.0))
        await store.aclose()
        late = await _open(cache_location)
        late._policies.clear()
        late.put(CachedPolicy("example.com", POLICY, "old", 1000.0))
        await late.aclose()
        check = await _open(cache_location)
        assert check.get("example.com").policy_id == "new"  # type: ignore[union-attr]
        await check.aclose()

    asyncio.run(run())


def test_sync_reads_what_others_wrote_and_keeps_what_is_newer(cache_location: str) -> None:
    """The refreshing worker's view: policies the other workers fetched since it started."""

    async def run() -> None:
        leader = await _open(cache_location)
        other = await _open(cache_location)
        leader.put(CachedPolicy("mine.example", POLICY, "mine-new", 3000.0))
        other.put(CachedPolicy("theirs.example", POLICY, "theirs", 2000.0))
        other.put(CachedPolicy("mine.example", POLICY, "mine-old", 1000.0))
        await other.aclose()
        assert leader.get("theirs.example") is None
        await leader.sync()
        assert leader.get("theirs.example") == CachedPolicy(
            "theirs.example", POLICY, "theirs", 2000.0
        )
        assert leader.get("mine.example").policy_id == "mine-new"  # type: ignore[union-attr]
        assert len(leader) == 2
        await leader.aclose()

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
