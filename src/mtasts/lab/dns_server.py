"""An authoritative DNS server for the lab zones, over UDP and TCP.

It answers A, AAAA, MX, TXT, CNAME, TLSA and SOA (and any other type a
scenario writes) from the topology's records, follows CNAME chains inside the
lab, answers NXDOMAIN or NODATA with the SOA in the authority section, sets TC
when a UDP answer does not fit, and injects the scenario's faults: SERVFAIL,
or no answer at all (a timeout). Messages go through :mod:`mtasts.net.dnswire`,
because the lab shares the CPU with the tools measured against it; record
types it has no zone-file reader for are converted by dnspython, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from mtasts.net import dnswire

from .topology import LISTEN_BACKLOG, Topology

log = logging.getLogger("mtasts.lab.dns")
_TTL = 300
_MAX_CHAIN = 8
_UDP_LIMIT = 512  # without EDNS (RFC 1035 §4.2.1)
_RCVBUF = 4 * 1024 * 1024


class Zone:
    """Answers from the topology's text records, each turned into wire form the first time it is asked."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.records = topology.records
        self.faults = topology.dns_faults
        self._cache: dict[tuple[str, str], list[dnswire.Wire]] = {}
        self._generation = topology.generation

    def rrset(self, name: str, rdtype: str) -> list[dnswire.Wire]:
        if self._generation != self.topology.generation:  # `lab change` edited the records
            self._cache.clear()
            self._generation = self.topology.generation
        key = (name, rdtype)
        cached = self._cache.get(key)
        if cached is None:
            rtype = dns.rdatatype.from_text(rdtype)
            cached = [
                (name, rtype, _TTL, _rdata(rtype, text)) for text in self.records[name][rdtype]
            ]
            self._cache[key] = cached
        return cached

    def soa_for(self, name: str) -> list[dnswire.Wire]:
        labels = name.split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if "SOA" in self.records.get(candidate, {}):
                return self.rrset(candidate, "SOA")
        return []

    def answer(self, query: dnswire.Query, limit: int | None) -> bytes | None:
        """The response to ``query``, or None to stay silent (the timeout fault)."""
        name = query.name
        fault = self.faults.get(name)
        if fault == "timeout":
            return None
        if fault == "servfail":
            return dnswire.encode_response(query, dnswire.SERVFAIL, [])
        rdtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(query.qtype))
        answers: list[dnswire.Wire] = []
        rcode = dnswire.NOERROR
        for _ in range(_MAX_CHAIN):
            node = self.records.get(name)
            if node is None:
                if not answers:
                    rcode = dnswire.NXDOMAIN
                break
            if rdtype in node:
                answers += self.rrset(name, rdtype)
                return dnswire.encode_response(query, rcode, answers, limit=limit)
            if "CNAME" in node and rdtype != "CNAME":
                cname = self.rrset(name, "CNAME")
                answers += cname
                name = dnswire.decode_name(cname[0][3])
                continue
            break
        return dnswire.encode_response(query, rcode, answers, self.soa_for(name), limit=limit)


def _rdata(rtype: int, text: str) -> bytes:
    try:
        return dnswire.encode_rdata(rtype, text)
    except dnswire.WireError:
        # A type (or a spelling) the fast reader does not know: dnspython reads any zone text.
        # Lab data is written with absolute names; no origin, so nothing is relativised.
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rtype), text)
        return rdata.to_wire() or b""


def _wire(zone: Zone, data: bytes, udp: bool) -> bytes | None:
    try:
        query = dnswire.decode_query(data)
    except dnswire.WireError:
        if len(data) < 12:
            return None
        # Echo the id with FORMERR so the client stops waiting.
        return struct.pack("!HHHHHH", struct.unpack("!H", data[:2])[0], 0x8001, 0, 0, 0, 0)
    limit = (query.payload or _UDP_LIMIT) if udp else None
    try:
        return zone.answer(query, limit)
    except (dns.exception.DNSException, dnswire.WireError, ValueError, KeyError):
        # A record the scenario spelled wrong: say SERVFAIL rather than go silent.
        log.exception("cannot answer %s %s", query.name, query.qtype)
        return dnswire.encode_response(query, dnswire.SERVFAIL, [])


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = _wire(self.zone, data, udp=True)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _tcp_client(
    zone: Zone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = _wire(zone, await reader.readexactly(length), udp=False)
            if reply is None:
                continue
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_dns(
    topology: Topology, port: int
) -> list[asyncio.AbstractServer | asyncio.BaseTransport]:
    """Start UDP and TCP listeners on the topology's DNS address."""
    zone = Zone(topology)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Udp(zone), local_addr=(topology.dns_address, port)
    )
    # A scan's first seconds send thousands of questions at once while the same loop does
    # TLS handshakes; the default buffer (about 200 queries) drops the rest, which reads as
    # a DNS timeout. Real servers take a bigger one too (Unbound's so-rcvbuf); the kernel
    # caps it at net.core.rmem_max.
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    server = await asyncio.start_server(
        lambda r, w: _tcp_client(zone, r, w), topology.dns_address, port, backlog=LISTEN_BACKLOG
    )
    return [transport, server]
