"""The security review's network findings: the policy fetch, the resolver's bounds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mtasts.lab.ca import LabCA
from mtasts.net.https import fetch_policy

from .conftest import MTASTS, wait_for_port
from .test_net_properties import _FixedResolver

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: mx2.example.com\r\nmax_age: 86400\r\n"


def test_a_close_delimited_policy_is_read_to_the_end() -> None:
    """#12: with no Content-Length the body ends at EOF; it used to be cut at the first segment."""
    ca = LabCA(Path(tempfile.mkdtemp(prefix="mtasts-body-ca-")))
    context = ca.server_context(("mta-sts.split.example",))

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        writer.write(POLICY[:30])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(POLICY[30:])
        await writer.drain()
        writer.close()

    async def main() -> object:
        server = await asyncio.start_server(reply, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        try:
            return await fetch_policy(
                _FixedResolver(), "split.example", port=port, ca_file=ca.ca_file, timeout=5
            )  # type: ignore[arg-type]
        finally:
            server.close()
            await server.wait_closed()

    fetch = asyncio.run(main())
    assert fetch.body == POLICY  # type: ignore[attr-defined]


def _serve(
    tmp_path: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    (tmp_path / "mtasts.toml").write_text("")
    process = subprocess.Popen(
        [
            MTASTS,
            "serve",
            "--proxy",
            "--port",
            str(port),
            "--metrics-listen",
            "none",
            "--reports",
            f"sqlite:///{tmp_path / 'r.sqlite'}",
            *args,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    wait_for_port(port, process)
    return process


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b"" or sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("parser", ["auto", "h11"])
def test_serve_bounds_slow_and_idle_clients(
    tmp_path: Path, free_tcp_port: int, parser: str
) -> None:
    """#6: a client trickling its head, one that sends nothing, and a 1 byte/s body were all
    still held after 25 s; --proxy listened on every address. Both HTTP parsers: httptools
    (mtasts[fast], the default when installed) and h11."""
    process = _serve(
        tmp_path,
        free_tcp_port,
        "--header-timeout",
        "2",
        "--body-timeout",
        "2",
        env={"MTASTS_HTTP_PARSER": parser},
    )
    try:
        idle = socket.create_connection(("127.0.0.1", free_tcp_port))
        trickle = socket.create_connection(("127.0.0.1", free_tcp_port))
        started = time.monotonic()
        trickle.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n")
        for _ in range(3):
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                trickle.sendall(b"X-Slow: 1\r\n")
        assert _closed_within(idle, 3), "an idle connection was held past the header timeout"
        assert _closed_within(trickle, 3), "a trickled request head was held"
        assert time.monotonic() - started < 8
        body = socket.create_connection(("127.0.0.1", free_tcp_port))
        body.sendall(
            b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        body.settimeout(6)
        answer = b""
        with contextlib.suppress(OSError):
            for _ in range(3):
                time.sleep(0.5)
                body.sendall(b" ")
            while chunk := body.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=10)
    # --proxy listens on loopback only unless told otherwise (it used to take 0.0.0.0).
    assert f"on http://127.0.0.1:{free_tcp_port}" in log.decode()
    assert f"uvloop, {'httptools' if parser == 'auto' else 'h11'})" in log.decode()


def test_the_https_rua_limits_size_and_rate(tmp_path: Path, free_tcp_port: int) -> None:
    """#4, #5: 20 MiB POSTs by default and no rate limit; now 2 MiB and N a minute per address."""
    import gzip
    import urllib.error
    import urllib.request

    from .test_reports_analysis import stored_report

    process = _serve(tmp_path, free_tcp_port, "--posts-per-minute", "3")

    def post(data: bytes) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{free_tcp_port}/tlsrpt",
            data,
            {"Content-Type": "application/tlsrpt+gzip"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), response.headers.get("Retry-After", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Retry-After", "")

    try:
        big = json.loads(stored_report("big.example", "example.org"))
        big["padding"] = "x" * (3 << 20)
        assert post(gzip.compress(json.dumps(big).encode()))[0] == 400  # inflates past 2 MiB
        statuses = [
            post(gzip.compress(stored_report("s.example", "example.org", report_id=f"r{i}")))
            for i in range(3)
        ]
        assert [s for s, _ in statuses] == [201, 201, 429]
        assert int(statuses[-1][1]) >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def test_the_probe_waits_for_the_answer_to_quit_but_keeps_its_facts_without_one() -> None:
    """RFC 5321 §4.1.1.10: the sender waits for the reply to QUIT before closing (a server
    that has answered is done with the session: a scan's next probe of the address does not
    overlap it). A server that never answers QUIT costs the wait, not the probe's facts."""
    from mtasts.net.smtp import probe_mx

    async def run(answer_quit: bool) -> tuple[object, float | None, float | None]:
        times: dict[str, float] = {}

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 quiet.example ESMTP\r\n")
            while line := await reader.readline():
                if line.upper().startswith(b"EHLO"):
                    writer.write(b"250-quiet.example\r\n250 SIZE 1000\r\n")  # no STARTTLS
                elif line.upper().startswith(b"QUIT") and answer_quit:
                    await asyncio.sleep(0.3)
                    times["answered"] = time.monotonic()
                    writer.write(b"221 bye\r\n")
            times["closed"] = time.monotonic()  # the client hung up (EOF)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            probe = await probe_mx("quiet.example", "127.0.0.1", port=port, timeout=1.0)
            await asyncio.sleep(0.2)
        return probe, times.get("answered"), times.get("closed")

    probe, answered, closed = asyncio.run(run(answer_quit=True))
    assert answered is not None
    assert closed is not None
    assert closed >= answered  # the prober hung up only after the 221
    assert (probe.starttls, probe.error_kind) == (False, None)  # type: ignore[attr-defined]

    probe, _, _ = asyncio.run(run(answer_quit=False))
    # QUIT unanswered past the 1 s timeout: the facts gathered before it stand.
    assert (probe.starttls, probe.error_kind) == (False, None)  # type: ignore[attr-defined]
