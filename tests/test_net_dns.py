"""The DNS wire codec against dnspython as the oracle, and the stub resolver against scripted servers."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Callable

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtasts.net import dnswire
from mtasts.net.dns import Answer, DnsLookupError, Nameserver, Resolver

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
hostname = st.lists(label, min_size=1, max_size=5).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
txt = st.lists(st.binary(max_size=60), min_size=1, max_size=4)


def _rdata(rtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, text)


@st.composite
def records(draw: st.DrawFn) -> tuple[str, str, object]:
    """(owner, type, what our decoder should read) with the dnspython rdata text to build it from."""
    owner = draw(hostname)
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "MX", "TXT", "TLSA"]))
    if kind in ("A", "AAAA"):
        address = draw(ipv4 if kind == "A" else ipv6)
        return owner, kind, address
    if kind == "CNAME":
        return owner, kind, draw(hostname)
    if kind == "MX":
        return owner, kind, (draw(st.integers(0, 65535)), draw(hostname))
    if kind == "TXT":
        return owner, kind, tuple(draw(txt))
    matching = draw(st.integers(0, 2))  # 1 and 2 are SHA-256 and SHA-512: their lengths are fixed
    size = {0: draw(st.integers(1, 64)), 1: 32, 2: 64}[matching]
    data = draw(st.binary(min_size=size, max_size=size))
    return owner, kind, (draw(st.integers(0, 3)), draw(st.integers(0, 1)), matching, data)


def _to_rdata(kind: str, value: object) -> dns.rdata.Rdata:
    if kind in ("A", "AAAA"):
        return _rdata(kind, str(value))
    if kind == "CNAME":
        return _rdata(kind, f"{value}.")
    if kind == "MX":
        preference, host = value  # type: ignore[misc]
        return _rdata(kind, f"{preference} {host}.")
    if kind == "TXT":
        return _rdata(
            kind, " ".join('"' + "".join(f"\\{b:03d}" for b in part) + '"' for part in value)
        )  # type: ignore[attr-defined]
    usage, selector, matching, data = value  # type: ignore[misc]
    return _rdata(kind, f"{usage} {selector} {matching} {data.hex()}")


@given(
    st.sampled_from(["A", "AAAA", "MX", "TXT", "TLSA"]), hostname, st.lists(records(), max_size=6)
)
@settings(max_examples=300, deadline=None)
def test_responses_decode_as_dnspython_reads_them(
    qtype: str, qname: str, answer: list[tuple[str, str, object]]
) -> None:
    query = dns.message.make_query(qname, qtype)
    response = dns.message.make_response(query)
    for owner, kind, value in answer:
        rrset = response.find_rrset(
            response.answer,
            dns.name.from_text(owner),
            dns.rdataclass.IN,
            dns.rdatatype.from_text(kind),
            create=True,
        )
        rrset.update_ttl(300)
        rrset.add(_to_rdata(kind, value))
    wire = response.to_wire()  # with name compression, as servers send it
    decoded = dnswire.decode_response(wire)
    assert decoded.id == query.id
    assert decoded.question == (qname.lower(), dnswire.TYPES[qtype])
    expected = sorted(
        (rr.name.to_text(omit_final_dot=True).lower(), rr.rdtype, _value(rr.rdtype, rd))
        for rr in dns.message.from_wire(wire).answer
        for rd in rr
    )
    ours = sorted((r.name, r.rtype, _same(r.rtype, r.value)) for r in decoded.answers)
    assert ours == expected


def _same(rtype: int, value: object) -> object:
    """Addresses compare as addresses: '::ffff:0:0' and '::ffff:0.0.0.0' are one IPv6 address."""
    return ipaddress.ip_address(value) if rtype in (1, 28) else value  # type: ignore[arg-type]


def _value(rtype: int, rd: dns.rdata.Rdata) -> object:
    if rtype in (1, 28):
        return ipaddress.ip_address(rd.address)  # type: ignore[attr-defined]
    if rtype == 5:
        return rd.target.to_text(omit_final_dot=True).lower()  # type: ignore[attr-defined]
    if rtype == 15:
        return (rd.preference, rd.exchange.to_text(omit_final_dot=True).lower())  # type: ignore[attr-defined]
    if rtype == 16:
        return tuple(rd.strings)  # type: ignore[attr-defined]
    return (rd.usage, rd.selector, rd.mtype, rd.cert)  # type: ignore[attr-defined]


@given(st.binary(max_size=600))
@settings(max_examples=2000, deadline=None)
def test_any_bytes_decode_or_raise_wire_error_only(data: bytes) -> None:
    with contextlib.suppress(dnswire.WireError):
        dnswire.decode_response(data)


@given(st.binary(min_size=12, max_size=300), st.integers(12, 299), st.integers(0, 255))
@settings(max_examples=1000, deadline=None)
def test_damaged_real_responses_raise_wire_error_only(tail: bytes, at: int, byte: int) -> None:
    query = dns.message.make_query("mx.example.com", "MX")
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text(
            "mx.example.com.", 300, "IN", "MX", "10 a.example.com.", "20 b.example.com."
        )
    )
    wire = bytearray(response.to_wire() + tail)
    wire[at % len(wire)] = byte
    with contextlib.suppress(dnswire.WireError):
        dnswire.decode_response(bytes(wire))


@given(hostname, st.sampled_from(sorted(dnswire.TYPES)), st.integers(0, 65535))
def test_queries_are_read_by_dnspython_as_sent(name: str, rdtype: str, qid: int) -> None:
    parsed = dns.message.from_wire(
        dnswire.encode_query(qid, dnswire.question(name, dnswire.TYPES[rdtype]))
    )
    assert parsed.id == qid
    assert parsed.flags & dns.flags.RD
    assert parsed.flags & dns.flags.AD
    assert (parsed.edns, parsed.payload) == (0, dnswire.EDNS_PAYLOAD)
    assert parsed.question[0].name == dns.name.from_text(name)
    assert dns.rdatatype.to_text(parsed.question[0].rdtype) == rdtype


@given(st.text(max_size=300))
def test_any_name_encodes_or_raises_wire_error_only(name: str) -> None:
    with contextlib.suppress(dnswire.WireError):
        assert dnswire.encode_name(name).endswith(b"\x00")


def test_compression_loops_and_forward_pointers_are_refused() -> None:
    header = (1).to_bytes(2, "big") + b"\x81\x80" + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    with pytest.raises(dnswire.WireError, match="does not point backwards"):
        dnswire.decode_response(header + b"\xc0\x0c\x00\x01\x00\x01")  # points at itself
    with pytest.raises(dnswire.WireError, match="label"):
        dnswire.decode_response(header + b"\x40abc")  # the reserved 01 label type


# The stub resolver against servers that misbehave on purpose.

Behaviour = Callable[[dns.message.Message, str], dns.message.Message | bytes | None]


@contextlib.asynccontextmanager
async def scripted(behaviour: Behaviour) -> AsyncIterator[Nameserver]:
    """A DNS server on 127.0.0.1 (UDP and TCP, one port) answering as ``behaviour`` says."""
    loop = asyncio.get_running_loop()

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            reply = behaviour(dns.message.from_wire(data), "udp")
            if reply is not None:
                self.transport.sendto(reply if isinstance(reply, bytes) else reply.to_wire(), addr)  # type: ignore[attr-defined]

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        reply = behaviour(dns.message.from_wire(await reader.readexactly(size)), "tcp")
        if isinstance(reply, dns.message.Message):
            wire = reply.to_wire(max_size=65535)
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
        writer.close()

    # One number for UDP and TCP: the UDP port the kernel picks may be some TCP socket's
    # (an ephemeral port of a connection elsewhere), so pick again until both are free.
    for _ in range(50):
        transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            server = await asyncio.start_server(tcp, "127.0.0.1", port)
            break
        except OSError:
            transport.close()
    else:
        raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
    try:
        yield Nameserver("127.0.0.1", port)
    finally:
        transport.close()
        server.close()


def _answer(query: dns.message.Message, *texts: str, rdtype: str = "A") -> dns.message.Message:
    response = dns.message.make_response(query)
    name = query.question[0].name
    if texts:
        response.answer.append(dns.rrset.from_text(name, 300, "IN", rdtype, *texts))
    return response


def test_a_truncated_answer_is_asked_again_over_tcp() -> None:
    seen = []

    def behaviour(query: dns.message.Message, transport: str) -> dns.message.Message:
        seen.append(transport)
        if transport == "udp":
            response = _answer(query)
            response.flags |= dns.flags.TC
            return response
        return _answer(query, *(f"192.0.2.{n}" for n in range(1, 80)))

    async def run() -> tuple[str, ...]:
        async with scripted(behaviour) as server:
            return (await Resolver((server,), timeout=3).lookup("big.example", "A")).records

    assert len(asyncio.run(run())) == 79
    assert seen == ["udp", "tcp"]


def test_a_spoofed_answer_for_another_question_is_ignored() -> None:
    """A forged datagram with the right ID but another question arrives first; the real one wins."""

    async def run() -> tuple[str, ...]:
        loop = asyncio.get_running_loop()

        class Both(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                query = dns.message.from_wire(data)
                forged = _answer(dns.message.make_query("bank.example", "A"), "203.0.113.66")
                forged.id = query.id  # the right ID, the wrong question
                self.transport.sendto(forged.to_wire(), addr)  # type: ignore[attr-defined]
                self.transport.sendto(_answer(query, "192.0.2.1").to_wire(), addr)  # type: ignore[attr-defined]

        transport, _ = await loop.create_datagram_endpoint(Both, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            return (
                await Resolver((Nameserver("127.0.0.1", port),), timeout=3).lookup(
                    "www.example", "A"
                )
            ).records
        finally:
            transport.close()

    assert asyncio.run(run()) == ("192.0.2.1",)


def test_servfail_moves_on_to_the_next_server_and_fails_when_all_do() -> None:
    def servfail(query: dns.message.Message, _transport: str) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        return response

    def good(query: dns.message.Message, _transport: str) -> dns.message.Message:
        return _answer(query, "192.0.2.7")

    async def run() -> tuple[tuple[str, ...], str]:
        async with scripted(servfail) as bad, scripted(good) as fine:
            found = (await Resolver((bad, fine), timeout=3).lookup("www.example", "A")).records
            try:
                await Resolver((bad,), timeout=3).lookup("www.example", "A")
            except DnsLookupError as exc:
                return found, str(exc)
        return found, ""

    found, error = asyncio.run(run())
    assert found == ("192.0.2.7",)
    assert error.startswith("A www.example: 127.0.0.1 answered SERVFAIL")


def test_silence_is_a_lookup_error_after_the_timeout_and_nxdomain_is_empty() -> None:
    def silent(_query: dns.message.Message, _transport: str) -> None:
        return None

    def nxdomain(query: dns.message.Message, _transport: str) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    async def run() -> tuple[float, str, tuple[str, ...]]:
        async with scripted(silent) as quiet, scripted(nxdomain) as missing:
            started = time.monotonic()
            try:
                await Resolver((quiet,), timeout=1).lookup("slow.example", "TXT")
                error = ""
            except DnsLookupError as exc:
                error = str(exc)
            waited = time.monotonic() - started
            empty = (await Resolver((missing,), timeout=1).lookup("gone.example", "TXT")).records
            return waited, error, empty

    waited, error, empty = asyncio.run(run())
    assert error == "TXT slow.example: no answer within 1 s"
    assert 0.9 < waited < 3
    assert empty == ()


def test_cname_chains_are_followed_and_the_canonical_name_reported() -> None:
    def behaviour(query: dns.message.Message, _transport: str) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.answer.append(
            dns.rrset.from_text("mx.example.", 300, "IN", "CNAME", "edge.cdn.example.")
        )
        response.answer.append(
            dns.rrset.from_text("edge.cdn.example.", 300, "IN", "CNAME", "host.provider.example.")
        )
        response.answer.append(
            dns.rrset.from_text("host.provider.example.", 300, "IN", "A", "198.51.100.9")
        )
        return response

    async def run() -> tuple[tuple[str, ...], str | None]:
        async with scripted(behaviour) as server:
            answer = await Resolver((server,), timeout=3).lookup("MX.Example.", "A")
            return answer.records, answer.canonical

    assert asyncio.run(run()) == (("198.51.100.9",), "host.provider.example")


# The server side, as the lab uses it.


@given(records())
@settings(max_examples=300, deadline=None)
def test_zone_text_encodes_as_dnspython_encodes_it(record: tuple[str, str, object]) -> None:
    _, kind, value = record
    text = _to_rdata(kind, value).to_text()  # dnspython's own zone-file spelling
    assert dnswire.encode_rdata(dnswire.TYPES[kind], text) == _to_rdata(kind, value).to_wire()


@given(st.sampled_from(["SOA", "TXT", "MX", "TLSA", "A"]), st.text(max_size=80))
def test_any_zone_text_encodes_or_raises_wire_error_only(kind: str, text: str) -> None:
    with contextlib.suppress(dnswire.WireError):
        dnswire.encode_rdata(dnswire.TYPES[kind], text)


@given(st.binary(max_size=300))
@settings(max_examples=1000, deadline=None)
def test_any_bytes_decode_as_a_query_or_raise_wire_error_only(data: bytes) -> None:
    with contextlib.suppress(dnswire.WireError):
        dnswire.decode_query(data)


@given(
    hostname, st.sampled_from(["A", "MX", "TXT"]), st.booleans(), st.lists(records(), max_size=5)
)
@settings(max_examples=200, deadline=None)
def test_responses_are_read_by_dnspython_as_sent(
    name: str, qtype: str, edns: bool, answer: list[tuple[str, str, object]]
) -> None:
    # dnspython keeps one CNAME per owner (RFC 2181 §10.1), so two would read as one.
    answer = [record for record in answer if record[1] != "CNAME"]
    query = dns.message.make_query(name.upper(), qtype, use_edns=0 if edns else False)
    parsed = dnswire.decode_query(query.to_wire())
    assert (parsed.name, parsed.payload is not None) == (name.lower(), edns)
    wires = [
        (owner, dnswire.TYPES[kind], 60, _to_rdata(kind, value).to_wire())
        for owner, kind, value in answer
    ]
    response = dns.message.from_wire(dnswire.encode_response(parsed, dnswire.NOERROR, wires))
    assert response.id == query.id
    assert query.is_response(response)  # dnspython's own check: the same question, QR set
    assert response.question[0].name.to_text() == f"{name.upper()}."  # the asker's letter case
    assert response.flags & dns.flags.AA
    # A set: dnspython keeps one copy of a record sent twice in one RRset.
    got = {
        (rr.name.to_text(omit_final_dot=True), rd.to_text()) for rr in response.answer for rd in rr
    }
    assert got == {(owner, _to_rdata(kind, value).to_text()) for owner, kind, value in answer}


def test_an_answer_too_large_for_udp_is_truncated() -> None:
    query = dnswire.decode_query(
        dns.message.make_query("big.example", "A", use_edns=False).to_wire()
    )
    wires = [("big.example", dnswire.A, 60, bytes([192, 0, 2, n])) for n in range(60)]
    truncated = dns.message.from_wire(
        dnswire.encode_response(query, dnswire.NOERROR, wires, limit=512)
    )
    assert truncated.flags & dns.flags.TC
    assert not truncated.answer
    whole = dns.message.from_wire(dnswire.encode_response(query, dnswire.NOERROR, wires))
    assert len(whole.answer[0]) == 60


def test_the_stub_resolver_reads_a_real_knot_server(knot: dict[str, object]) -> None:
    resolver = Resolver((Nameserver.parse(str(knot["server"])),), timeout=3)

    async def run() -> dict[str, object]:
        return {
            "mx": await resolver.mx("example.com"),
            "chain": (await resolver.lookup("mx1.example.com", "CNAME")).records,
            "txt": await resolver.txt("_smtp._tls.example.com"),
            "many": len((await resolver.lookup("many.example.com", "A")).records),  # over TCP
            "nxdomain": await resolver.lookup("nothing.example.com", "A"),
            "nodata": await resolver.lookup("ns.example.com", "MX"),
        }

    async def outside() -> None:
        await resolver.lookup("example.org", "A")

    found = asyncio.run(run())
    assert found["mx"] == [(10, "mx1.example.com"), (20, "mx2.example.com")]
    assert found["chain"] == ("edge.example.com",)
    assert found["txt"] == [[b"v=TLSRPTv1; ", b"rua=mailto:tlsrpt@example.com"]]
    assert found["many"] == 120
    assert found["nxdomain"] == Answer(nxdomain=True)  # the name does not exist
    assert found["nodata"] == Answer()  # the name exists, without that type
    with pytest.raises(DnsLookupError, match=r"^A example\.org: 127\.0\.0\.1 answered REFUSED$"):
        asyncio.run(outside())  # Knot is not authoritative for it: a failure, not "no record"


def test_many_lookups_at_once_share_few_sockets_whose_ports_keep_changing() -> None:
    """1,200 concurrent lookups: one socket opened at a time, a new source port every 500."""
    ports: list[int] = []

    async def run() -> int:
        loop = asyncio.get_running_loop()

        class Counting(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                ports.append(addr[1])
                reply = _answer(dns.message.from_wire(data), "192.0.2.1").to_wire()
                self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

        transport, _ = await loop.create_datagram_endpoint(Counting, local_addr=("127.0.0.1", 0))
        resolver = Resolver(
            (Nameserver("127.0.0.1", transport.get_extra_info("sockname")[1]),), timeout=5
        )
        try:
            answers = await asyncio.gather(
                *(resolver.lookup(f"h{n}.example", "A") for n in range(1200))
            )
        finally:
            transport.close()
        return sum(1 for a in answers if a.records == ("192.0.2.1",))

    assert asyncio.run(run()) == 1200
    assert len(set(ports)) == 3


def test_a_server_nobody_listens_on_fails_fast_and_says_so() -> None:
    import socket

    with socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM
    ) as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def run() -> str:
        try:
            await Resolver((Nameserver("127.0.0.1", port),), timeout=5).lookup("example.com", "MX")
        except DnsLookupError as exc:
            return str(exc)
        return ""

    started = time.monotonic()
    error = asyncio.run(run())
    assert error == "MX example.com: 127.0.0.1 is unreachable (Connection refused)"
    assert time.monotonic() - started < 2  # not the whole 5-second timeout


def test_a_name_that_cannot_be_asked_is_a_lookup_error() -> None:
    async def run() -> str:
        try:
            await Resolver((Nameserver("127.0.0.1", 9),), timeout=1).lookup("bücher.example", "MX")
        except DnsLookupError as exc:
            return str(exc)
        return ""

    assert asyncio.run(run()) == "MX bücher.example: 'bücher.example': not an ASCII (A-label) name"
