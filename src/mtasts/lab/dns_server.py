"""An authoritative DNS server for the lab zones, over UDP and TCP (dnspython messages).

It answers A, AAAA, MX, TXT, CNAME, TLSA and SOA from the topology's records,
follows CNAME chains inside the lab, answers NXDOMAIN or NODATA with the SOA in
the authority section, sets TC when a UDP answer does not fit, and injects the
scenario's faults: SERVFAIL, or no answer at all (a timeout).
"""

from __future__ import annotations

import asyncio
import logging
import struct

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .topology import Topology

log = logging.getLogger("mtasts.lab.dns")
_TTL = 300
_MAX_CHAIN = 8


class Zone:
    """Lazily turns the topology's text records into dnspython rrsets."""

    def __init__(self, topology: Topology) -> None:
        self.records = topology.records
        self.faults = topology.dns_faults
        self._cache: dict[tuple[str, str], dns.rrset.RRset] = {}

    def rrset(self, name: str, rdtype: str) -> dns.rrset.RRset:
        key = (name, rdtype)
        cached = self._cache.get(key)
        if cached is None:
            owner = dns.name.from_text(name)
            cached = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
            cached.update_ttl(_TTL)
            for text in self.records[name][rdtype]:
                # Lab data is written with absolute names; no origin, so nothing is relativised.
                cached.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text))
            self._cache[key] = cached
        return cached

    def soa_for(self, name: str) -> dns.rrset.RRset | None:
        labels = name.split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if "SOA" in self.records.get(candidate, {}):
                return self.rrset(candidate, "SOA")
        return None

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response to ``query``, or None to stay silent (the timeout fault)."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        fault = self.faults.get(name)
        if fault == "timeout":
            return None
        if fault == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        for _ in range(_MAX_CHAIN):
            node = self.records.get(name)
            if node is None:
                if not response.answer:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                break
            if rdtype in node:
                response.answer.append(self.rrset(name, rdtype))
                return response
            if "CNAME" in node and rdtype != "CNAME":
                cname = self.rrset(name, "CNAME")
                response.answer.append(cname)
                name = cname[0].target.to_text(omit_final_dot=True).lower()
                continue
            break
        soa = self.soa_for(name)
        if soa is not None:
            response.authority.append(soa)
        return response


def _wire(zone: Zone, data: bytes, max_size: int | None) -> bytes | None:
    try:
        query = dns.message.from_wire(data)
    except dns.exception.DNSException:
        if len(data) < 12:
            return None
        # Echo the id with FORMERR so the client stops waiting.
        return struct.pack("!HHHHHH", struct.unpack("!H", data[:2])[0], 0x8001, 0, 0, 0, 0)
    try:
        response = zone.answer(query)
    except (dns.exception.DNSException, ValueError, KeyError):
        # A record the scenario spelled wrong: say SERVFAIL rather than go silent.
        log.exception("cannot answer %s", query.question)
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
    if response is None:
        return None
    if max_size is None:
        return response.to_wire()
    limit = max(512, query.payload if query.edns >= 0 else 512)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.TC | dns.flags.AA
        return truncated.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = _wire(self.zone, data, max_size=512)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _tcp_client(
    zone: Zone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = _wire(zone, await reader.readexactly(length), max_size=None)
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
    server = await asyncio.start_server(
        lambda r, w: _tcp_client(zone, r, w), topology.dns_address, port
    )
    return [transport, server]
