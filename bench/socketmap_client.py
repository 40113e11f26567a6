"""A socketmap load generator: ``python -m bench.socketmap_client PORT MODE ...``, prints JSON.

MODE ``cached DOMAIN CLIENTS REQUESTS``: every client sends REQUESTS lookups of one
(already cached) domain over its own connection, one at a time, as Postfix does.
MODE ``cold FILE CLIENTS``: the domains of FILE, each looked up once.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time


def _netstring(text: str) -> bytes:
    raw = text.encode()
    return b"%d:%s," % (len(raw), raw)


async def _read(reader: asyncio.StreamReader) -> bytes:
    length = await reader.readuntil(b":")
    data = await reader.readexactly(int(length[:-1]) + 1)
    return data[:-1]


async def _client(
    port: int, keys: list[str], latencies: list[float], replies: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for key in keys:
        started = time.perf_counter()
        writer.write(_netstring(f"postfix {key}"))
        reply = await _read(reader)
        latencies.append(time.perf_counter() - started)
        kind = reply.split(b" ", 1)[0].decode()
        replies[kind] = replies.get(kind, 0) + 1
    writer.close()


async def main(argv: list[str]) -> dict[str, object]:
    port, mode = int(argv[0]), argv[1]
    if mode == "cached":
        domain, clients, requests = argv[2], int(argv[3]), int(argv[4])
        batches = [[domain] * requests for _ in range(clients)]
    else:
        domains = open(argv[2]).read().split()  # noqa: SIM115
        clients = int(argv[3])
        batches = [domains[i::clients] for i in range(clients)]
    latencies: list[float] = []
    replies: dict[str, int] = {}
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, batch, latencies, replies) for batch in batches))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "replies": replies,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
