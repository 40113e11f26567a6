"""The one DNS adapter: dnspython's async resolver, pointed at the system or at given servers."""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver


class DnsLookupError(Exception):
    """The lookup itself failed (SERVFAIL, timeout): unlike NXDOMAIN, this says nothing about the data."""


@dataclass(frozen=True, slots=True)
class Nameserver:
    address: str
    port: int = 53

    @classmethod
    def parse(cls, text: str) -> Nameserver:
        """``HOST`` or ``HOST:PORT`` (``[v6]:PORT`` for IPv6)."""
        if text.startswith("["):
            host, _, port = text[1:].partition("]:")
            return cls(host.rstrip("]"), int(port) if port else 53)
        host, sep, port = text.rpartition(":")
        if sep and host and "." in host and port.isdigit():
            return cls(host, int(port))
        return cls(text)


class Resolver:
    def __init__(self, nameservers: tuple[Nameserver, ...] = (), timeout: float = 5.0) -> None:
        self._resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [n.address for n in nameservers]
            self._resolver.port = nameservers[0].port
        self._resolver.lifetime = timeout

    async def txt(self, name: str) -> list[list[bytes]]:
        """The TXT records at ``name``, each as its list of strings; [] when none exist."""
        try:
            answer = await self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DnsLookupError(f"{name}: {exc}") from None
        return [list(r.strings) for r in answer]
