"""The event loop for network-bound work: uvloop when installed (``mtasts[fast]``).

``check`` and the resolver daemon run on it. A batch check spends most of its CPU in asyncio's pure-Python TLS and transport layers
(``sslproto``, selector callbacks), which uvloop implements in C: the same 3,000 lab
domains took 27.7 s with asyncio and 19.9 s with uvloop on a 2-core machine; the resolver
spends its cached lookups in the loop's socket callbacks, which uvloop runs in C too. Without
uvloop, or with ``MTASTS_EVENT_LOOP=asyncio`` (to rule it out when chasing a bug), the
standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's."""
    if os.environ.get("MTASTS_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest loop available."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
