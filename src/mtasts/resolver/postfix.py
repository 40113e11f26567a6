"""What Postfix is told: ``smtp_tls_policy_maps`` replies, netstrings and tcp_table encoding.

Replies stay byte-compatible with postfix-mta-sts-resolver
(``secure match=mx1.example.com:.example.net servername=hostname``), so a
Postfix configuration migrates unchanged. Postfix writes a policy pattern
``*.example.net`` as ``.example.net``, which also matches deeper names
(``a.b.example.net``); RFC 8461 §4.1 allows exactly one label, so Postfix is
slightly more permissive than the policy. Postfix 3.10 understands TLSRPT
attributes after the level; they are off by default (Postfix 3.7 rejects them).
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import quote

from mtasts.errors import MtastsError
from mtasts.sts import Mode
from mtasts.sts.cache import CachedPolicy

TCP_TABLE_LIMIT = 4096


class TestingAnswer(StrEnum):
    """Postfix cannot "deliver and report": choose what a testing policy becomes."""

    NONE = "none"  # NOTFOUND: Postfix's own default TLS settings apply (recommended)
    MAY = "may"  # opportunistic TLS, never fails delivery
    SECURE = "secure"  # treat testing like enforce (strict testing, for admins who opt in)


def match_pattern(wildcard: bool, domain: str) -> str:
    return f".{domain}" if wildcard else domain


def policy_reply(
    cached: CachedPolicy | None, testing: TestingAnswer, tlsrpt: bool = False, dane: bool = False
) -> str | None:
    """The table value for a domain, or None for NOTFOUND."""
    if cached is None or cached.policy.mode is Mode.NONE:
        return None
    policy = cached.policy
    if dane:
        # RFC 8461 §2: MTA-STS must not override DANE; Postfix's "dane" level verifies TLSA.
        # But "dane" falls back to opportunistic TLS when Postfix's own TLSA lookup finds no
        # secure records, which would undo an enforce policy: "dane-only" fails closed.
        strict = policy.mode is Mode.ENFORCE or testing is TestingAnswer.SECURE
        return "dane-only" if strict else "dane"
    if policy.mode is Mode.TESTING:
        if testing is TestingAnswer.NONE:
            return None
        if testing is TestingAnswer.MAY:
            return "may"
    match = ":".join(match_pattern(p.wildcard, p.domain) for p in policy.mx)
    reply = f"secure match={match} servername=hostname"
    if tlsrpt:
        patterns = " ".join(f"mx_host_pattern={p}" for p in policy.mx)
        lines = " ".join(f"{{ policy_string = {line} }}" for line in str(policy).splitlines())
        reply += f" policy_type=sts policy_domain={cached.domain} {patterns} {lines}"
    return reply


class NetstringError(MtastsError, ValueError):
    """The peer broke the netstring framing; the connection cannot continue."""


MAX_NETSTRING = 100_000  # Postfix's socketmap limit


class SocketmapDecoder:
    """Socketmap requests from bytes as they arrive, with no I/O (the h11 way).

    Postfix sends each request as a netstring ``LEN:NAME KEY,`` (socketmap_table(5));
    any read may end anywhere in one. :meth:`feed` takes what arrived and
    :meth:`next_request` returns one whole ``(name, key)`` or None until more comes;
    broken framing raises :class:`NetstringError`, after which the connection is over.

    >>> decoder = SocketmapDecoder()
    >>> decoder.feed(b"18:policy exa")
    >>> decoder.next_request() is None
    True
    >>> decoder.feed(b"mple.com,")
    >>> decoder.next_request()
    ('policy', 'example.com')
    """

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_request(self) -> tuple[str, str] | None:
        frame = self.next_frame()
        return None if frame is None else (frame[1], frame[2])

    def next_frame(self) -> tuple[bytes, str, str] | None:
        """Like :meth:`next_request`, with the request's whole netstring first (a cache key)."""
        colon = self.buffer.find(b":")
        if colon < 0:
            if self.buffer and (not self.buffer.isdigit() or len(self.buffer) > 6):
                raise NetstringError("bad netstring length")
            return None
        digits = bytes(self.buffer[:colon])
        if not digits.isdigit() or len(digits) > 6 or int(digits) > MAX_NETSTRING:
            raise NetstringError("bad netstring length")
        end = colon + 1 + int(digits)
        if len(self.buffer) <= end:
            return None
        if self.buffer[end] != ord(","):
            raise NetstringError("netstring not terminated by ','")
        frame = bytes(self.buffer[: end + 1])
        data = frame[colon + 1 : end]
        del self.buffer[: end + 1]
        try:
            request = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NetstringError("request is not UTF-8") from None
        if " " not in request:
            raise NetstringError("the request has no key (expected 'NAME KEY')")
        zone, _, key = request.partition(" ")
        return frame, zone, key


def netstring(data: str) -> bytes:
    raw = data.encode("utf-8")
    return b"%d:%s," % (len(raw), raw)


def tcp_table_reply(value: str | None) -> bytes:
    """tcp_table(5): 200 with the value %-encoded, 500 for not found; capped at 4,096 characters."""
    if value is None:
        return b"500 not found\n"
    encoded = quote(value, safe="=:.,-_/*[]@")
    if len(encoded) > TCP_TABLE_LIMIT - 5:
        return b"400 reply too long for tcp_table\n"
    return f"200 {encoded}\n".encode("ascii")
