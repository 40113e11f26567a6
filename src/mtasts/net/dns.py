"""The one DNS adapter: dnspython's async resolver, pointed at the system or at given servers.

Every lookup distinguishes "the name or data does not exist" (an empty answer)
from "the lookup failed" (:class:`DnsLookupError`): RFC 8461 §3.1 treats the
first as "no policy", while a failure must not be mistaken for a removed record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.resolver


class DnsLookupError(Exception):
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
    raw: tuple[object, ...] = field(default=(), compare=False)


class Resolver:
    def __init__(self, nameservers: tuple[Nameserver, ...] = (), timeout: float = 5.0) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [n.address for n in nameservers]
            self._resolver.port = nameservers[0].port
        self._resolver.lifetime = timeout
        # Ask for the AD bit so a validating resolver can tell us a TLSA set is DNSSEC-signed.
        self._resolver.flags = dns.flags.RD | dns.flags.AD
        self.lookups = 0
        self.seconds = 0.0

    async def lookup(self, name: str, rdtype: str) -> Answer:
        started = time.perf_counter()
        self.lookups += 1
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Answer()
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.YXDOMAIN) as exc:
            raise DnsLookupError(f"{rdtype} {name}: {exc}") from None
        finally:
            self.seconds += time.perf_counter() - started
        canonical = answer.canonical_name.to_text(omit_final_dot=True)
        authenticated = bool(answer.response.flags & dns.flags.AD)
        return Answer(
            tuple(r.to_text() for r in answer),
            canonical if canonical.lower() != name.lower().rstrip(".") else None,
            authenticated,
            tuple(answer),
        )

    async def txt(self, name: str) -> list[list[bytes]]:
        """The TXT records at ``name`` (CNAMEs followed), each as its list of strings."""
        answer = await self.lookup(name, "TXT")
        return [list(r.strings) for r in answer.raw]  # type: ignore[attr-defined]

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """(preference, host) pairs sorted by preference; host without the root dot."""
        answer = await self.lookup(domain, "MX")
        pairs = [
            (r.preference, r.exchange.to_text(omit_final_dot=True).lower())  # type: ignore[attr-defined]
            for r in answer.raw
        ]
        return sorted(pairs)
