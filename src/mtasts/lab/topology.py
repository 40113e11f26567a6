"""Where every lab host lives: addresses, DNS data, SMTP endpoints and policy sites.

Built once from a scenario, then read by the servers. Scenario domains get one
address per MX address so each can carry its own fault; generated domains
share a small pool of addresses (certificates are picked by SNI), so 10,000
domains need tens of listeners, not tens of thousands.
"""

from __future__ import annotations

import ssl
import zlib
from dataclasses import dataclass, field

from mtasts.sts.domain import normalise_host

from .scenario import HostFault, LabDomain, MxAddress, MxFault

_POOL_SIZE = 16  # healthy MX addresses shared by generated domains, unless asked otherwise
_FAULT_SPREAD = 8  # addresses per MX fault among generated domains
# Listen queue of every lab listener. One lab address stands for thousands of hosts, each
# of which would have a queue of its own; with asyncio's default of 100, a scan's bursts
# overflowed it and the kernel dropped SYNs, which the client retries after 1 s and 3 s:
# a policy fetch that failed a 5 s timeout in the lab for want of queue, not of a server.
# The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096


@dataclass
class SmtpEndpoint:
    """One listening SMTP address and the MX names (with their faults) it serves."""

    address: str
    fault: MxFault
    names: dict[str, MxAddress] = field(default_factory=dict)
    backend: str | None = None  # for strip-starttls: the healthy MX behind the attacker
    # Set by `lab change --certificate`: a certificate that expires in N days, and a
    # counter that makes a renewal issue a new certificate for the same names.
    days_left: int | None = None
    generation: int = 0
    context: ssl.SSLContext | None = field(default=None, repr=False)  # built by smtp_server
    # Counted by smtp_server for `lab stats`: a scan's politeness is proven by what the
    # servers saw, not by what the scanner says it did.
    connections: int = 0
    active: int = 0
    peak: int = 0

    @property
    def default_name(self) -> str:
        return next(iter(self.names), "mx.lab.invalid")


@dataclass(frozen=True, slots=True)
class LabSite:
    domain: LabDomain
    policy: str | None
    fault: HostFault


class _Addresses:
    """Hands out 127.<subnet>.x.y addresses, skipping .0 and .255."""

    def __init__(self, subnet: str) -> None:
        self.subnet = subnet
        self.next = 256 + 1

    def take(self) -> str:
        while self.next % 256 in (0, 255):
            self.next += 1
        value = self.next
        self.next += 1
        if value >= 65536:
            raise ValueError(f"the lab ran out of addresses in {self.subnet}.0.0/16")
        return f"{self.subnet}.{value // 256}.{value % 256}"


@dataclass
class Topology:
    subnet: str
    dns_address: str
    https_address: str
    dead_address: str
    stale_https_address: str  # the policy hosts' forgotten second backend (bad-backend)
    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    dns_faults: dict[str, str] = field(default_factory=dict)
    smtp: dict[str, SmtpEndpoint] = field(default_factory=dict)
    sites: dict[str, LabSite] = field(default_factory=dict)
    mx_addresses: dict[str, list[tuple[str, MxFault]]] = field(default_factory=dict)
    generation: int = 0  # bumped by every `lab change` of DNS data: the DNS server's cache key

    def add(self, name: str, rdtype: str, value: str) -> None:
        self.records.setdefault(normalise_host(name), {}).setdefault(rdtype, []).append(value)


def txt_value(strings: tuple[str, ...]) -> str:
    """TXT record data in zone-file form: each string quoted."""
    return " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in strings)


def build(
    domains: tuple[LabDomain, ...],
    generated: tuple[LabDomain, ...],
    subnet: str,
    pool_size: int = _POOL_SIZE,
) -> Topology:
    topo = Topology(subnet, f"{subnet}.0.53", f"{subnet}.0.1", f"{subnet}.0.2", f"{subnet}.0.3")
    addresses = _Addresses(subnet)
    for domain in domains:
        _publish(topo, domain)
        for mx in domain.mx:
            for spec in mx.addresses:
                _place(topo, domain, mx.name, mx.cname, spec, addresses.take(), addresses)
    pool = [addresses.take() for _ in range(pool_size)] if generated else []
    fault_pool: dict[tuple[MxFault, int], str] = {}
    for domain in generated:
        _publish(topo, domain)
        for mx in domain.mx:
            for n, spec in enumerate(mx.addresses):
                if spec.fault is MxFault.NONE:
                    address = pool[(zlib.crc32(mx.name.encode()) + n) % len(pool)]
                else:
                    # Spread over a few addresses per fault, as real broken hosts are: one
                    # address holding every broken MX name would be a hot spot no real
                    # provider is, and a polite scan crawls through it one slot at a time.
                    spread = (spec.fault, zlib.crc32(mx.name.encode()) % _FAULT_SPREAD)
                    address = fault_pool.setdefault(spread, addresses.take())
                _place(topo, domain, mx.name, mx.cname, spec, address, addresses)
    return topo


def _publish(topo: Topology, domain: LabDomain) -> None:
    name = domain.name
    for mx in domain.mx:
        topo.add(name, "MX", f"{mx.preference} {mx.name}.")
        if mx.cname:
            topo.add(mx.name, "CNAME", f"{mx.cname}.")
    for record in domain.sts_txt():
        topo.add(f"_mta-sts.{name}", "TXT", txt_value(record))
    for record in domain.tlsrpt_txt():
        topo.add(f"_smtp._tls.{name}", "TXT", txt_value(record))
    policy = domain.policy_text()
    if policy is not None:
        host = f"mta-sts.{name}"
        dead = domain.policy_host is HostFault.NO_LISTENER
        topo.add(host, "A", topo.dead_address if dead else topo.https_address)
        if domain.policy_host is HostFault.BAD_BACKEND:
            topo.add(host, "A", topo.stale_https_address)
        topo.sites[host] = LabSite(domain, policy, domain.policy_host)
    for owner, rdtype, value in domain.records:
        topo.add(owner, rdtype.upper(), value)
    for owner, fault in domain.dns_faults:
        topo.dns_faults[owner] = str(fault)
    topo.add(name, "SOA", f"ns.{name}. hostmaster.{name}. 1 3600 600 86400 60")


def _place(
    topo: Topology,
    domain: LabDomain,
    mx_name: str,
    cname: str | None,
    spec: MxAddress,
    address: str,
    addresses: _Addresses,
) -> None:
    target = cname or mx_name
    if address not in topo.records.get(target, {}).get("A", []):
        topo.add(target, "A", address)
    endpoint = topo.smtp.get(address)
    if endpoint is None:
        endpoint = topo.smtp[address] = SmtpEndpoint(address, spec.fault)
        if spec.fault is MxFault.STRIP:
            backend = addresses.take()
            endpoint.backend = backend
            topo.smtp[backend] = SmtpEndpoint(backend, MxFault.NONE)
    endpoint.names[mx_name] = spec
    if cname:
        endpoint.names.setdefault(cname, spec)
    if endpoint.backend:
        topo.smtp[endpoint.backend].names[mx_name] = MxAddress()
    topo.mx_addresses.setdefault(domain.name, []).append((address, spec.fault))
