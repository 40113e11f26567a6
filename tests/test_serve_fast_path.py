"""The policy GET's fast path answers exactly as the Starlette app behind it would."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mtasts.web.app import create_app, policy_fast_path
from mtasts.web.site import PolicySite

from .conftest import MTASTS

REQUESTS = [
    ("GET", "mta-sts.example.com"),
    ("HEAD", "mta-sts.example.com"),
    ("GET", "MTA-STS.Example.COM."),  # names compare case-insensitively, root dot or not
    ("GET", "mta-sts.example.com:443"),
    ("GET", "mta-sts.example.org"),
    ("GET", "mta-sts.unknown.example"),  # 404 from the app
    ("GET", "[::1]:443"),
    ("GET", ""),
    ("POST", "mta-sts.example.com"),  # not a read: the app says no
]


def _site(folder: Path) -> PolicySite:
    env = {**os.environ, "NO_COLOR": "1"}
    for domain, mode in (("example.com", "testing"), ("example.org", "enforce")):
        subprocess.run(
            [MTASTS, "init", domain, "--mx", f"mx.{domain}", "--mode", mode, "--force"],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )
    site = PolicySite(folder / "mtasts.toml")
    site.load()
    return site


async def _answer(app: Any, method: str, host: str, path: str) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode())] if host else [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 443),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/.well-known/mta-sts.txt", "/", "/.well-known/mta-sts.txt/"])
def test_the_fast_path_answers_as_the_app_does(tmp_path: Path, path: str) -> None:
    site = _site(tmp_path)
    plain = create_app(site)
    behind = create_app(site)
    reached: list[tuple[str, str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reached.append((scope["method"], dict(scope["headers"]).get(b"host", b"").decode()))
        await behind(scope, receive, send)

    fast = policy_fast_path(site, app)

    async def both() -> None:
        for method, host in REQUESTS:
            expected = await _answer(plain, method, host, path)
            got = await _answer(fast, method, host, path)
            assert got == expected, (method, host, path)

    asyncio.run(both())
    # The served policy never reached the app behind: the fast path answered it alone.
    served = [(m, h) for m, h in REQUESTS if m in ("GET", "HEAD") and "example.com" in h.lower()]
    served += [("GET", "mta-sts.example.org")]
    if path == "/.well-known/mta-sts.txt":
        assert reached == [r for r in REQUESTS if r not in served]
    else:
        assert reached == REQUESTS
    # Both paths count each fetch by domain and status, for /metrics.
    served = site.fetches[("example.com", 200)]
    assert served == (8 if path == "/.well-known/mta-sts.txt" else 0)


def test_the_fast_path_serves_a_reloaded_policy_at_once(tmp_path: Path) -> None:
    site = _site(tmp_path)
    fast = policy_fast_path(site, create_app(site))

    async def body() -> bytes:
        sent = await _answer(fast, "GET", "mta-sts.example.com", "/.well-known/mta-sts.txt")
        return bytes(sent[-1]["body"])

    assert b"mode: testing" in asyncio.run(body())
    config = site.config_path.read_text()
    site.config_path.write_text(config.replace('mode = "testing"', 'mode = "enforce"', 1))
    site.reload()
    assert b"mode: enforce" in asyncio.run(body())


@pytest.mark.parametrize("flag", ["--access-log", "--no-access-log"])
def test_the_access_log_can_be_turned_off(tmp_path: Path, free_tcp_port: int, flag: str) -> None:
    import signal
    import urllib.request

    from .conftest import wait_for_port

    _site(tmp_path)
    process = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--proxy",
            "--port",
            str(free_tcp_port),
            "--metrics-listen",
            "none",
            flag,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(free_tcp_port, process)
        request = urllib.request.Request(
            f"http://127.0.0.1:{free_tcp_port}/.well-known/mta-sts.txt",
            headers={"Host": "mta-sts.example.com"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert b"mode: testing" in answer.read()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    log = err.decode()
    assert "serving 2 policies" in log
    assert ("request client=127.0.0.1" in log) is (flag == "--access-log")


def test_access_lines_are_written_while_serving_and_quote_what_clients_chose(
    tmp_path: Path, free_tcp_port: int
) -> None:
    """Lines are written in batches, so the log must not wait for the server to stop, and
    a Host or path with quotes in it stays inside its own quoted field (logfmt)."""
    import os
    import select
    import signal
    import socket
    import time

    from .conftest import wait_for_port

    _site(tmp_path)
    process = subprocess.Popen(
        [MTASTS, "serve", "--proxy", "--port", str(free_tcp_port), "--metrics-listen", "none"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        wait_for_port(free_tcp_port, process)
        for host, path in (
            ("mta-sts.example.com", "/.well-known/mta-sts.txt"),
            ("mta-sts.example.com'x=\"1", "/a'b%22c"),
        ):
            with socket.create_connection(("127.0.0.1", free_tcp_port), timeout=5) as conn:
                conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                assert conn.recv(100).startswith(b"HTTP/1.1 ")
        seen, deadline = b"", time.monotonic() + 5
        while seen.count(b"\n") < 3 and time.monotonic() < deadline:  # start-up line + two
            if select.select([process.stderr], [], [], 0.1)[0]:
                seen += os.read(process.stderr.fileno(), 65536)
        assert process.poll() is None  # written while still serving
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    lines = [line for line in seen.decode().splitlines() if " request " in line]
    assert len(lines) == 2, seen
    first, hostile = lines
    assert first.startswith("time=")
    assert " level=INFO logger=mtasts.web.access request client=127.0.0.1 " in first
    assert (
        "host='mta-sts.example.com' method=GET path='/.well-known/mta-sts.txt' status=200" in first
    )
    # repr() of each: the quotes are escaped, so no field or line can be forged.
    assert "host='mta-sts.example.com\\'x=\"1' method=GET path='/a\\'b\"c' status=404" in hostile
