"""The security review's resolver findings (#16-#20), through its sockets or its engine."""

from __future__ import annotations

import asyncio
import socket
import stat
import time
import tracemalloc
from pathlib import Path
from typing import Any

from mtasts.net.dns import Answer, DnsLookupError
from mtasts.resolver.engine import EngineOptions, PolicyEngine
from mtasts.resolver.store import PolicyStore

from .conftest import RunningLab
from .test_resolver import SOCKETMAP_PORT, ask, netstring, start_daemon


class _NoPolicies:
    """DNS where no domain publishes MTA-STS: the cheapest lookups an attacker can cause."""

    nameservers = ()

    def __init__(self) -> None:
        self.asked = 0

    async def txt(self, name: str) -> list[list[bytes]]:
        self.asked += 1
        return []

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        raise DnsLookupError("not asked in this test")

    async def lookup(self, name: str, rdtype: str) -> Answer:
        return Answer()


def test_per_domain_state_is_bounded(tmp_path: Path) -> None:
    """#18: 200,000 distinct domains kept 200,000 states (121 MiB), never freed (here 100,000)."""
    resolver = _NoPolicies()
    engine = PolicyEngine(resolver, PolicyStore(None), EngineOptions(max_domains=5_000))  # type: ignore[arg-type]

    async def flood(first: int, count: int) -> None:
        for start in range(first, first + count, 1_000):
            await asyncio.gather(
                *(engine.lookup(f"d{n}.example") for n in range(start, start + 1_000))
            )

    tracemalloc.start()
    asyncio.run(flood(0, 20_000))
    after_first, _ = tracemalloc.get_traced_memory()
    asyncio.run(flood(20_000, 80_000))
    after_all, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(engine._states) == 5_000
    assert resolver.asked == 100_000  # every name was really looked up, none skipped
    # Five times the domains, about the same memory: the state is bounded, not the input.
    assert after_all < after_first * 1.5, (after_first, after_all)


def test_the_unix_socket_is_not_world_writable(lab: RunningLab, tmp_path: Path) -> None:
    """#19: the socket was chmod 0666 after bind, by a path a symlink could redirect."""
    daemon = start_daemon(
        tmp_path, "--lab", str(lab.state_dir), "--cache", str(tmp_path / "c.sqlite")
    )
    try:
        deadline = time.monotonic() + 10
        while not daemon.unix.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert stat.S_IMODE(daemon.unix.stat().st_mode) == 0o660
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.unix))
            assert ask(sock, "good-enforce.example").startswith("OK secure")
    finally:
        daemon.stop()


def test_a_client_that_never_reads_is_paused(lab: RunningLab, tmp_path: Path) -> None:
    """#17: pipelined requests that are never read grew the daemon's memory without bound."""
    daemon = start_daemon(
        tmp_path, "--lab", str(lab.state_dir), "--cache", str(tmp_path / "c.sqlite")
    )
    try:
        with socket.create_connection(("127.0.0.1", SOCKETMAP_PORT), timeout=10) as sock:
            ask(sock, "good-enforce.example")  # now remembered: every reply below is cheap
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            request = netstring("postfix good-enforce.example")
            sock.setblocking(False)
            sent = 0
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    sent += sock.send(request * 64)
                except BlockingIOError:
                    time.sleep(0.2)
                    try:
                        sent += sock.send(request)
                    except BlockingIOError:
                        break  # the daemon stopped reading: back-pressure
            assert time.monotonic() < deadline, "the daemon kept reading a client that never reads"
            assert sent < 50 * 1024 * 1024
    finally:
        daemon.stop()


def test_a_domain_cannot_forge_log_lines_or_flood_the_log(monkeypatch: Any, caplog: Any) -> None:
    """#20: tcp_table keys are %-decoded, so %0a put a newline (a forged log line) into the
    warning, and a failing domain was warned about on every lookup."""
    from mtasts.net.https import PolicyFetch
    from mtasts.resolver import engine as engine_module

    class _Published(_NoPolicies):
        async def txt(self, name: str) -> list[list[bytes]]:
            return [[b"v=STSv1; id=1;"]]

    async def failing(*_args: object, **_kw: object) -> PolicyFetch:
        return PolicyFetch("https://x/", error_kind="connect", error="refused")

    monkeypatch.setattr(engine_module, "fetch_policy", failing)
    clock = [1000.0]
    engine = PolicyEngine(
        _Published(), PolicyStore(None), EngineOptions(grace=0), clock=lambda: clock[0]
    )  # type: ignore[arg-type]
    key = "forged.example\nlevel=ERROR msg=forged"
    with caplog.at_level("WARNING", logger="mtasts.resolver"):
        for _ in range(5):
            asyncio.run(engine.lookup(key))
            clock[0] += 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # once per warn_every, however often the domain is asked
    assert "\n" not in warnings[0]
    assert "forged.example\\nlevel=error" in warnings[0]
