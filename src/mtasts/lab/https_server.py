"""The ``mta-sts.<domain>`` policy hosts: one HTTPS listener, SNI picks the certificate.

Routing is by the Host header. Each site can carry a fault: 404 or 500, a 301
redirect (RFC 8461 §3.3 forbids following it), a ``text/html`` media type, a
body over the 64 KiB limit senders apply, a body that trickles in, or a
certificate that is for another name or expired. A site marked ``no-listener``
resolves to an address where nothing listens; one marked ``bad-backend`` resolves
to two addresses, the second an old server still serving last year's policy; one
marked ``flaky`` leaves every other request unanswered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import ssl

from mtasts.sts.names import WELL_KNOWN_PATH

from .ca import LabCA, Validity
from .scenario import HostFault
from .topology import LISTEN_BACKLOG, LabSite, Topology

log = logging.getLogger("mtasts.lab.https")
_SLOW_STEP = 1.0
_SLOW_LIMIT = 30
_SILENT_LIMIT = 60.0  # seconds the flaky fault holds an unanswered connection at most


def _certificate_for(ca: LabCA, sites: dict[str, LabSite], sni: str | None) -> ssl.SSLContext:
    site = sites.get(sni or "")
    if site is None or sni is None:
        return ca.server_context(("policy-host.lab.invalid",))
    if site.fault is HostFault.WRONG_CERT:
        return ca.server_context((f"www.{site.domain.name}",))
    if site.fault is HostFault.EXPIRED_CERT:
        return ca.server_context((sni,), Validity.EXPIRED)
    return ca.server_context((sni,))


def warm(ca: LabCA, topology: Topology) -> None:
    """Every policy host's certificate made and loaded now, not at its first fetch."""
    for name in topology.sites:
        _certificate_for(ca, topology.sites, name)


def listener_context(ca: LabCA, topology: Topology) -> ssl.SSLContext:
    base = ca.server_context(("policy-host.lab.invalid",))
    base_sites = topology.sites

    def pick(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = _certificate_for(ca, base_sites, name.lower() if name else None)

    base.sni_callback = pick
    return base


def _response(status: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


def stale_policy(policy: str) -> str:
    """What a forgotten backend still serves: the policy before the MX move, in testing."""
    lines = [line for line in policy.splitlines() if not line.startswith(("mx:", "mode:"))]
    return "\r\n".join([lines[0], "mode: testing", "mx: old-mx.lab.invalid", *lines[1:]]) + "\r\n"


def render(site: LabSite | None, path: str, stale: bool = False) -> tuple[bytes, bytes | None]:
    """The response head+body for a request, and a body to trickle for the slow fault;
    ``stale`` is the answer of the bad-backend fault's second address."""
    not_found = _response("404 Not Found", "text/plain", b"not found\n")
    if site is None or path != WELL_KNOWN_PATH or site.policy is None:
        return not_found, None
    body = site.policy.encode()
    fault = site.fault
    if fault is HostFault.BAD_BACKEND and stale:
        return _response("200 OK", "text/plain", stale_policy(site.policy).encode()), None
    if fault is HostFault.STATUS_404:
        return not_found, None
    if fault is HostFault.STATUS_500:
        return _response("500 Internal Server Error", "text/plain", b"internal error\n"), None
    if fault is HostFault.REDIRECT:
        where = f"https://www.{site.domain.name}{WELL_KNOWN_PATH}"
        return _response(
            "301 Moved Permanently", "text/plain", b"moved\n", f"Location: {where}\r\n"
        ), None
    if fault is HostFault.CONTENT_TYPE:
        return _response("200 OK", "text/html", body), None
    if fault is HostFault.OVERSIZED:
        padding = b"".join(b"x-pad-%05d: %s\r\n" % (i, b"a" * 100) for i in range(1000))
        return _response("200 OK", "text/plain", body + padding), None
    if fault is HostFault.SLOW:
        head = _response("200 OK", "text/plain", body)
        return head[: len(head) - len(body)], body
    return _response("200 OK", "text/plain; charset=utf-8", body), None


async def _client(
    topology: Topology,
    asked: collections.Counter[str],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stale: bool = False,
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        path = parts[1] if len(parts) == 3 else ""
        host = ""
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "host":
                host = (
                    value.strip().lower().rsplit(":", 1)[0] if "]" not in value else value.strip()
                )
        site = topology.sites.get(host)
        if site is not None and site.fault is HostFault.FLAKY:
            asked[host] += 1
            if asked[host] % 2:
                await asyncio.wait_for(reader.read(), _SILENT_LIMIT)  # until the client hangs up
                return
        data, slow = render(site, path, stale)
        writer.write(data)
        await writer.drain()
        if slow is not None:
            # One byte a second: a sender's fetch timeout must fire first (RFC 8461 §3.3).
            for i in range(min(len(slow), _SLOW_LIMIT)):
                await asyncio.sleep(_SLOW_STEP)
                writer.write(slow[i : i + 1])
                await writer.drain()
    except (
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        TimeoutError,
        ConnectionError,
        ssl.SSLError,
    ):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve_https(ca: LabCA, topology: Topology, port: int) -> list[asyncio.AbstractServer]:
    """The policy hosts' listener, and the stale second backend of the bad-backend fault."""
    servers: list[asyncio.AbstractServer] = []
    asked: collections.Counter[str] = collections.Counter()  # requests per flaky host
    for address, stale in ((topology.https_address, False), (topology.stale_https_address, True)):
        handler = functools.partial(_client, topology, asked, stale=stale)
        servers.append(
            await asyncio.start_server(
                handler,
                address,
                port,
                ssl=listener_context(ca, topology),
                backlog=LISTEN_BACKLOG,
            )
        )
    return servers
