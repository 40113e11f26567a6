"""The security review's network findings: the policy fetch, the resolver's bounds."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from mtasts.lab.ca import LabCA
from mtasts.net.https import fetch_policy

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
