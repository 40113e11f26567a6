"""SMTP MX hosts with STARTTLS (RFC 3207) that accept and discard mail.

Each listening address carries its own fault: no STARTTLS in the EHLO reply,
a certificate for another name, expired, not yet valid or from an untrusted
CA, a connection dropped during the handshake, a host that never greets, or
TLS 1.0 only. Every accepted message is appended to ``mail.log`` (JSON lines)
so tests can see what arrived and whether it came over TLS. Mail to a domain's
report mailbox (``tlsrpt@<domain>``, the lab's default rua) is kept whole in the
Maildir ``mailboxes/<domain>``: the lab's domains receive TLS reports like real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
from pathlib import Path

from mtasts.net.tls import quiet_start_tls_eof

from .ca import LabCA, Validity
from .scenario import MxFault
from .topology import LISTEN_BACKLOG, SmtpEndpoint

_MAX_MESSAGE = 10 * 1024 * 1024
_IDLE = 60


_Args = tuple[tuple[str, ...], Validity, bool, bool, int | None, int]


def _certificate(endpoint: SmtpEndpoint, name: str) -> _Args:
    """(names, validity, trusted, tls1.0-only, days left, generation) of the certificate
    served for ``name``."""
    spec = endpoint.names.get(name)
    fault = spec.fault if spec else endpoint.fault
    renewal = (endpoint.days_left, endpoint.generation)
    if fault is MxFault.CERT_NAME and spec and spec.cert_name:
        return (spec.cert_name,), Validity.VALID, True, False, *renewal
    return (
        (name,),
        {MxFault.EXPIRED: Validity.EXPIRED, MxFault.NOT_YET_VALID: Validity.NOT_YET_VALID}.get(
            fault, Validity.VALID
        ),
        fault is not MxFault.UNTRUSTED,
        fault is MxFault.TLS10,
        *renewal,
    )


def warm(ca: LabCA, endpoint: SmtpEndpoint) -> None:
    """Every certificate this address can present made and loaded now, not at first SNI."""
    tls_context(ca, endpoint)
    for name in endpoint.names:
        if name != endpoint.default_name:
            ca.server_context(*_certificate(endpoint, name))


def tls_context(ca: LabCA, endpoint: SmtpEndpoint) -> ssl.SSLContext:
    """The STARTTLS context of one address: SNI picks among the MX names it serves.

    Built once per endpoint and again after ``lab change`` reset it (a new certificate)."""
    if endpoint.context is not None:
        return endpoint.context
    context = ca.server_context(*_certificate(endpoint, endpoint.default_name), fresh=True)

    def pick(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name and name.lower() in endpoint.names and name.lower() != endpoint.default_name:
            sslobj.context = ca.server_context(*_certificate(endpoint, name.lower()))

    context.sni_callback = pick
    endpoint.context = context
    return context


class _Session:
    def __init__(
        self,
        endpoint: SmtpEndpoint,
        context: ssl.SSLContext,
        log_path: Path,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.endpoint = endpoint
        self.context = context
        self.log_path = log_path
        self.reader = reader
        self.writer = writer
        self.tls = False
        self.helo = ""
        self.sender = ""
        self.recipients: list[str] = []

    async def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()

    async def run(self) -> None:
        fault = self.endpoint.fault
        if fault is MxFault.HANG:
            await self.reader.read()  # never greet; wait for the client to give up
            return
        name = self.endpoint.default_name
        await self.send(f"220 {name} ESMTP mtasts-lab")
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), _IDLE)
            if not raw:
                return
            line = raw.decode("latin-1").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if not await self.command(verb, line, name):
                return

    async def command(self, verb: str, line: str, name: str) -> bool:
        if verb in ("EHLO", "HELO"):
            self.helo = line[5:].strip()
            if verb == "HELO":
                await self.send(f"250 {name}")
                return True
            offer_tls = not self.tls and self.endpoint.fault is not MxFault.NO_STARTTLS
            if self.endpoint.fault is MxFault.LONG_LINE:
                await self.send("250-" + "x" * 100 * 1024)
            if self.endpoint.fault is MxFault.REPLY_FLOOD:
                for _ in range(1_000_000):  # bounded: the client must give up long before
                    await self.send(f"250-{name}")
                return False
            caps = [name, "PIPELINING", f"SIZE {_MAX_MESSAGE}", "8BITMIME"]
            if offer_tls:
                caps.append("STARTTLS")
            caps.append("ENHANCEDSTATUSCODES")
            for cap in caps[:-1]:
                await self.send(f"250-{cap}")
            await self.send(f"250 {caps[-1]}")
        elif verb == "STARTTLS" and not self.tls and self.endpoint.fault is not MxFault.NO_STARTTLS:
            await self.send("220 2.0.0 Ready to start TLS")
            if self.endpoint.fault is MxFault.HANDSHAKE:
                return False
            await self.writer.start_tls(self.context)
            self.tls = True
            self.helo = ""
        elif verb == "MAIL":
            self.sender, self.recipients = line[10:].strip(), []
            await self.send("250 2.1.0 Ok")
        elif verb == "RCPT":
            self.recipients.append(line[8:].strip())
            await self.send("250 2.1.5 Ok")
        elif verb == "DATA":
            await self.data()
        elif verb in ("RSET", "NOOP"):
            await self.send("250 2.0.0 Ok")
        elif verb == "QUIT":
            await self.send("221 2.0.0 Bye")
            return False
        else:
            await self.send("502 5.5.2 Command not recognized")
        return True

    async def data(self) -> None:
        if not self.recipients:
            await self.send("503 5.5.1 RCPT first")
            return
        await self.send("354 End data with <CR><LF>.<CR><LF>")
        size = 0
        subject = ""
        mailboxes = [r.strip("<>").rpartition("@")[2].lower() for r in self.recipients]
        mailboxes = [
            d
            for d, r in zip(mailboxes, self.recipients, strict=True)
            if r.strip("<>").lower().startswith("tlsrpt@")
        ]
        kept: list[bytes] = []
        while True:
            chunk = await asyncio.wait_for(self.reader.readline(), _IDLE)
            if not chunk or chunk in (b".\r\n", b".\n"):
                break
            size += len(chunk)
            if mailboxes and size <= _MAX_MESSAGE:
                kept.append(chunk[1:] if chunk.startswith(b".") else chunk)  # RFC 5321 §4.5.2
            if not subject and chunk[:8].lower() == b"subject:":
                subject = chunk[8:].decode("utf-8", "replace").strip()
        if size > _MAX_MESSAGE:
            await self.send("552 5.3.4 Message too big")
            return
        ssl_object = self.writer.get_extra_info("ssl_object")
        entry = {
            "time": time.time(),
            "address": self.endpoint.address,
            "tls": self.tls,
            "tls_version": ssl_object.version() if ssl_object else None,
            "from": self.sender,
            "to": self.recipients,
            "subject": subject,
            "bytes": size,
        }
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        for domain in dict.fromkeys(mailboxes):
            _deliver(self.log_path.parent / "mailboxes" / domain, b"".join(kept))
        await self.send("250 2.0.0 Ok: queued")


def _deliver(maildir: Path, message: bytes) -> None:
    """Maildir delivery: written in tmp/, then renamed into new/ (never seen half-written)."""
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}.{os.getpid()}.lab"
    (maildir / "tmp" / name).write_bytes(message)
    os.replace(maildir / "tmp" / name, maildir / "new" / name)


async def _client(
    ca: LabCA,
    endpoint: SmtpEndpoint,
    log_path: Path,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    session = _Session(endpoint, tls_context(ca, endpoint), log_path, reader, writer)
    endpoint.connections += 1
    endpoint.active += 1
    endpoint.peak = max(endpoint.peak, endpoint.active)
    try:
        await session.run()
    except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        endpoint.active -= 1
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve_smtp(
    ca: LabCA, endpoint: SmtpEndpoint, port: int, log_path: Path
) -> asyncio.AbstractServer:
    tls_context(ca, endpoint)  # certificates are made before the first client comes
    quiet_start_tls_eof()
    return await asyncio.start_server(
        lambda r, w: _client(ca, endpoint, log_path, r, w),
        endpoint.address,
        port,
        backlog=LISTEN_BACKLOG,
    )
