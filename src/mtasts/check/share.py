"""What a batch of domains can share: the lookups and probes of an MX host they all name.

A provider's customers name the same MX hosts, so ``check --file`` over them would ask
for the same host's addresses and probe the same (host, address) pair once per domain:
the provider's servers see the same STARTTLS handshake hundreds of times, and we pay for
each. Within one batch each is done once and its result handed to every domain that
names the host (``mtasts scan`` does the same across its workers, ``scan.plan``).

Only finished and in-flight work is shared, bounded in number so a list of a million
domains does not keep every probe in memory; an evicted entry is simply redone.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_ENTRIES = 20_000  # MX hosts and (host, address) pairs remembered at once


class SharedLookups:
    """One batch's memo of MX-host lookups and probes, keyed by what determines them."""

    def __init__(self, entries: int = _ENTRIES) -> None:
        self._entries = max(1, entries)
        self._tasks: OrderedDict[Hashable, asyncio.Future[Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def once(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """``make()``'s result, computed once for ``key`` while it is remembered; callers
        asking meanwhile wait for the same result. ``make`` must not raise: the facts
        record network trouble instead (a raise would be shared by every waiter)."""
        task = self._tasks.get(key)
        if task is not None:
            self.hits += 1
            self._tasks.move_to_end(key)
        else:
            self.misses += 1
            task = asyncio.ensure_future(make())
            self._tasks[key] = task
            while len(self._tasks) > self._entries:
                self._tasks.popitem(last=False)  # an in-flight task still finishes for its callers
        result: T = await asyncio.shield(task)
        return result
