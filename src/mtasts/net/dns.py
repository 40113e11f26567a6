"""The one DNS adapter: a stub resolver that asks the system's (or the given) recursive servers.

Every lookup distinguishes "the name or data does not exist" (an empty answer)
from "the lookup failed" (:class:`DnsLookupError`): RFC 8461 §3.1 treats the
first as "no policy", while a failure must not be mistaken for a removed record.

Queries go over UDP through a few long-lived sockets, one in flight per random
ID, and a response is taken only from the server asked, with the ID and the
question asked (RFC 5452 §9.1); a truncated answer is asked again over TCP
(RFC 7766). Sockets are replaced after a few hundred queries so the source port
keeps changing. The wire format is :mod:`mtasts.net.dnswire`; dnspython only
reads /etc/resolv.conf.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from dataclasses import dataclass
from typing import cast

from mtasts.errors import MtastsError
from mtasts.sts.domain import normalise_host

from . import dnswire

_RCVBUF = 1024 * 1024  # bytes; the kernel caps it at net.core.rmem_max
_PER_TRY = 2.0  # seconds before asking again (or asking the next server), as dnspython does
_SOCKET_USES = 500  # queries per UDP socket before a new one (and a new source port)
_MAX_CNAMES = 16


class DnsLookupError(MtastsError):
    """The lookup itself failed (SERVFAIL, timeout): unlike NXDOMAIN, this says nothing about the data."""


@dataclass(frozen=True, slots=True)
class Nameserver:
    address: str
    port: int = 53

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        """``HOST`` or ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raises ValueError."""
        if text.startswith("["):
            host, _, port = text[1:].partition("]")
            port = port.removeprefix(":")
            return cls(host, int(port) if port else 53)
        host, sep, port = text.rpartition(":")
        if sep and host.count(":") == 0:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
            return cls(host, int(port))
        return cls(text)


@dataclass(frozen=True, slots=True)
class Answer:
    """Records found, the canonical name when CNAMEs were followed, and whether DNSSEC validated."""

    records: tuple[str, ...] = ()
    canonical: str | None = None
    authenticated: bool = False
    values: tuple[dnswire.Value, ...] = ()
    nxdomain: bool = False  # the name does not exist (RFC 8020: nor does anything below it)


class _Channel(asyncio.DatagramProtocol):
    """One connected UDP socket to one server: the kernel drops datagrams from anyone else."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}
        self.uses = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport, but is one.
        self.transport = cast(asyncio.DatagramTransport, transport)
        # Hundreds of lookups share this socket (check --file, a scan batch): their answers
        # can arrive in one burst, more than the default buffer (about 200 datagrams)
        # holds, and a dropped answer costs a retry after _PER_TRY seconds.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)

    def datagram_received(self, data: bytes, _addr: object) -> None:
        if len(data) < 12:
            return
        waiting = self.pending.get(int.from_bytes(data[:2], "big"))
        if waiting is None:
            return
        asked, future = waiting
        # A response must repeat the question exactly (RFC 5452 §9.1); anything else is ignored.
        if (
            data[2] & 0x80
            and data[4:6] == b"\x00\x01"
            and data[12 : 12 + len(asked)].lower() == asked
            and not future.done()
        ):
            future.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: nobody listens there
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(exc or ConnectionError("the DNS socket closed"))

    def usable(self) -> bool:
        return (
            self.uses < _SOCKET_USES
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def retire(self) -> None:
        """Take no new queries; close once the ones in flight are answered or time out."""
        self.closing = True
        self.release(-1)

    def release(self, qid: int) -> None:
        self.pending.pop(qid, None)
        if self.closing and not self.pending and self.transport is not None:
            self.transport.close()


class Resolver:
    def __init__(self, nameservers: tuple[Nameserver, ...] = (), timeout: float = 5.0) -> None:
        if not nameservers:
            nameservers = _system_nameservers()
        self.nameservers = nameservers
        self.timeout = timeout
        self._channels: dict[Nameserver, _Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening = asyncio.Lock()
        self.lookups = 0
        self.seconds = 0.0
        # Set by the first answer carrying the AD bit (RFC 6840 §5.7: only a validating
        # resolver sets it): until then DNSSEC questions (DANE's MX and TLSA) would only
        # cost a round trip each and can never be answered "secure".
        self.validates = False

    async def _channel(self, server: Nameserver) -> _Channel:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # sockets (and the lock) belong to one event loop
            self._channels, self._loop, self._opening = {}, loop, asyncio.Lock()
        channel = self._channels.get(server)
        if channel is None or not channel.usable():
            async with self._opening:  # many lookups start at once: open one socket, not many
                channel = self._channels.get(server)
                if channel is None or not channel.usable():
                    if channel is not None:
                        channel.retire()
                    _, channel = await loop.create_datagram_endpoint(
                        _Channel, remote_addr=(server.address, server.port)
                    )
                    self._channels[server] = channel
        channel.uses += 1
        return channel

    async def _udp(self, server: Nameserver, asked: bytes, wait: float) -> bytes:
        channel = await self._channel(server)
        qid = secrets.randbelow(65536)
        while qid in channel.pending:
            qid = secrets.randbelow(65536)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        channel.pending[qid] = (asked, future)
        try:
            assert channel.transport is not None
            channel.transport.sendto(dnswire.encode_query(qid, asked))
            return await asyncio.wait_for(future, wait)
        finally:
            channel.release(qid)

    async def _tcp(self, server: Nameserver, asked: bytes, wait: float) -> bytes:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(server.address, server.port)
            try:
                qid = secrets.randbelow(65536)
                query = dnswire.encode_query(qid, asked)
                writer.write(len(query).to_bytes(2, "big") + query)
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
            finally:
                writer.close()
        if data[:2] != qid.to_bytes(2, "big"):
            raise dnswire.WireError("the TCP answer has another ID")
        return data

    async def _exchange(self, asked: bytes) -> dnswire.Response:
        """The first usable response: NOERROR or NXDOMAIN from any server, tried in turn until the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        if not self.nameservers:
            raise _AllFailed("no DNS server configured (/etc/resolv.conf names none)")
        refused: dict[Nameserver, str] = {}
        while True:
            started = loop.time()
            for server in self.nameservers:
                if server in refused:
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                try:
                    data = await self._udp(server, asked, min(left, _PER_TRY))
                    response = dnswire.decode_response(data)
                    if response.truncated:
                        response = dnswire.decode_response(
                            await self._tcp(server, asked, max(0.1, deadline - loop.time()))
                        )
                except ConnectionRefusedError as exc:
                    # ICMP port unreachable: nothing listens there, and asking again will not help.
                    refused[server] = f"is unreachable ({exc.strerror or exc})"
                    continue
                except (TimeoutError, OSError, EOFError, asyncio.IncompleteReadError):
                    continue
                except dnswire.WireError as exc:
                    refused[server] = f"sent an unreadable answer ({exc})"
                    continue
                if response.rcode in (dnswire.NOERROR, dnswire.NXDOMAIN):
                    return response
                # SERVFAIL, REFUSED: this server will not answer better on a retry.
                code = dnswire.RCODES.get(response.rcode, f"rcode {response.rcode}")
                refused[server] = f"answered {code}"
            if len(refused) == len(self.nameservers):
                raise _AllFailed("; ".join(f"{s.address} {why}" for s, why in refused.items()))
            if loop.time() - started < 0.05:  # every server failed at once (no route?): do not spin
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))

    async def lookup(self, name: str, rdtype: str) -> Answer:
        started = time.perf_counter()
        self.lookups += 1
        rtype = dnswire.TYPES[rdtype]
        try:
            # Encoded once per lookup; a name that cannot be asked is said so, not sent.
            response = await self._exchange(dnswire.question(name, rtype))
        except TimeoutError:
            raise DnsLookupError(f"{rdtype} {name}: no answer within {self.timeout:g} s") from None
        except _AllFailed as exc:
            raise DnsLookupError(f"{rdtype} {name}: {exc}") from None
        except dnswire.WireError as exc:
            raise DnsLookupError(f"{rdtype} {name}: {exc}") from None
        finally:
            self.seconds += time.perf_counter() - started
        if response.authenticated:
            self.validates = True
        if response.rcode == dnswire.NXDOMAIN:
            return Answer(nxdomain=True)
        # Follow the CNAME chain the recursive server put in the answer (RFC 1034 §3.6.2).
        current = normalise_host(name)
        found: list[dnswire.Record] = []
        for _ in range(_MAX_CNAMES):
            found = [r for r in response.answers if r.name == current and r.rtype == rtype]
            alias = next(
                (r for r in response.answers if r.name == current and r.rtype == dnswire.CNAME),
                None,
            )
            if found or alias is None or not isinstance(alias.value, str):
                break
            current = alias.value
        if not found:
            return Answer()
        return Answer(
            tuple(r.text() for r in found),
            current if current != normalise_host(name) else None,
            response.authenticated,
            tuple(r.value for r in found),
        )

    async def probe_validation(self) -> bool:
        """Whether the servers validate DNSSEC, judged by the root zone's SOA, which is signed
        (RFC 4033 §2) and which a validating resolver therefore answers with AD."""
        with contextlib.suppress(DnsLookupError):
            await self.lookup(".", "SOA")
        return self.validates

    async def txt(self, name: str) -> list[list[bytes]]:
        """The TXT records at ``name`` (CNAMEs followed), each as its list of strings."""
        answer = await self.lookup(name, "TXT")
        return [
            [part for part in value if isinstance(part, bytes)]
            for value in answer.values
            if isinstance(value, tuple)
        ]

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """(preference, host) pairs sorted by preference; host without the root dot."""
        return mx_pairs(await self.lookup(domain, "MX"))


def mx_pairs(answer: Answer) -> list[tuple[int, str]]:
    """The (preference, host) pairs of an MX answer, sorted by preference."""
    return sorted(
        (value[0], value[1])
        for value in answer.values
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str)
    )


def _system_nameservers() -> tuple[Nameserver, ...]:
    """The servers /etc/resolv.conf names; none (each lookup then says so) when it cannot be read."""
    # dnspython's resolver module pulls in its DoH/DoQ clients: imported only here, where
    # /etc/resolv.conf is read, not by every command that imports this module.
    import dns.resolver

    try:
        system = dns.resolver.Resolver(configure=True)
    except (dns.resolver.NoResolverConfiguration, OSError):
        return ()
    return tuple(Nameserver(str(address), system.port) for address in system.nameservers)


class _AllFailed(Exception):
    """Every server answered with an error (SERVFAIL, REFUSED) or with bytes we cannot read."""
