"""SharedLookups: one computation per key while remembered, shared by concurrent callers."""

from __future__ import annotations

import asyncio

from mtasts.check.share import SharedLookups


def test_concurrent_callers_share_one_computation_and_old_keys_are_redone() -> None:
    calls: list[str] = []

    async def make(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(0.01)
        return key.upper()

    async def run() -> list[str]:
        shared = SharedLookups(entries=2)
        first = await asyncio.gather(*(shared.once(k, lambda k=k: make(k)) for k in "aaab"))
        again = [await shared.once("a", lambda: make("a"))]  # still remembered
        await shared.once("c", lambda: make("c"))  # evicts "b", the least recently used
        again.append(await shared.once("b", lambda: make("b")))  # made again
        assert (shared.hits, shared.misses) == (3, 4)
        return first + again

    assert asyncio.run(run()) == ["A", "A", "A", "B", "A", "B"]
    assert calls == ["a", "b", "c", "b"]
