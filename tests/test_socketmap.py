"""Socketmap framing (socketmap_table(5)): the pure decoder and the protocol that only moves
bytes, replayed with golden request -> reply streams at every read size from 1 byte to 4 KiB."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mtasts.resolver.postfix import NetstringError, SocketmapDecoder, netstring
from mtasts.resolver.server import SocketmapProtocol

GOLDEN: list[tuple[str, str | None]] = [
    ("policy good.example", "OK secure match=mx1.good.example:.good.example servername=hostname"),
    ("policy none.example", None),
    ("strict bücher.example", "OK secure match=mx.xn--bcher-kva.example servername=hostname"),
    ("policy slow.example", "OK dane-only"),  # needs a lookup: answered in order all the same
    ("policy " + "a" * 3000 + ".example", None),
    ("policy good.example", "OK secure match=mx1.good.example:.good.example servername=hostname"),
]
STREAM = b"".join(netstring(request) for request, _ in GOLDEN)
REPLIES = b"".join(
    netstring(f"OK {v.removeprefix('OK ')}" if v else "NOTFOUND ") for _, v in GOLDEN
)
SIZES = [*range(1, 64), *range(64, 4097, 97), 4096]


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", SIZES)
def test_the_decoder_gives_the_same_requests_at_every_read_size(size: int) -> None:
    decoder = SocketmapDecoder()
    found = []
    for piece in chunks(STREAM, size):
        decoder.feed(piece)
        while (request := decoder.next_request()) is not None:
            found.append(" ".join(request))
    assert found == [request for request, _ in GOLDEN]
    assert decoder.buffer == b""


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"x:policy a,", "bad netstring length"),
        (b"9999999:", "bad netstring length"),
        (b"100001:", "bad netstring length"),
        (b"8:policy a;", "netstring not terminated by ','"),
        (b"6:policy,", "the request has no key"),
        (b"8:policy \xff,", "request is not UTF-8"),
    ],
)
def test_broken_framing_is_one_typed_error_at_every_read_size(stream: bytes, error: str) -> None:
    def decode_all(size: int) -> None:
        decoder = SocketmapDecoder()
        for piece in chunks(stream, size):
            decoder.feed(piece)
            while decoder.next_request() is not None:
                pass

    for size in range(1, len(stream) + 1):
        with pytest.raises(NetstringError, match=error):
            decode_all(size)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Service:
    """Answers from the golden table: most from memory, slow.example after a lookup."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = {"ok": 0, "notfound": 0, "error": 0, "timeout": 0}
        self.table = {request.split(" ", 1)[1]: value for request, value in GOLDEN}

        self.ready: dict[bytes, bytes] = {}  # replies prepared by answer_now, as the service keeps

    def prepared(self, frame: bytes) -> bytes | None:
        return self.ready.get(frame)

    def answer_now(self, frame: bytes, zone: str, key: str) -> bytes | None:
        if key == "slow.example":
            return None
        value = self.table[key]
        reply = netstring(f"OK {value.removeprefix('OK ')}" if value else "NOTFOUND ")
        self.ready[frame] = reply
        return reply

    async def answer(self, key: str, zone: str) -> str | None:
        await asyncio.sleep(0.001)
        value = self.table[key]
        return value.removeprefix("OK ") if value else None


@pytest.mark.parametrize("size", SIZES)
def test_the_protocol_replies_in_order_at_every_read_size(size: int) -> None:
    async def run() -> bytes:
        protocol = SocketmapProtocol(_Service())  # type: ignore[arg-type]
        transport = _Transport()
        protocol.connection_made(transport)
        for piece in chunks(STREAM, size):
            protocol.data_received(piece)
        for _ in range(200):
            if len(transport.written) >= len(REPLIES):
                break
            await asyncio.sleep(0.005)
        protocol.connection_lost(None)
        return bytes(transport.written)

    assert asyncio.run(run()) == REPLIES


def test_the_protocol_refuses_broken_framing_and_closes() -> None:
    async def run() -> _Transport:
        protocol = SocketmapProtocol(_Service())  # type: ignore[arg-type]
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(netstring("policy good.example") + b"x:oops,")
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(run())
    assert transport.written.endswith(netstring("PERM bad netstring length"))
    assert transport.closed
