"""Pure planning for a scan: shards, batches, the (MX host, address) pairs a domain needs,
the opt-out list, provider names, and a domain's facts completed with the shared probes.

No I/O: :mod:`.work` feeds it what the network and the store returned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mtasts.check.facts import AddressFacts, DomainFacts
from mtasts.errors import MtastsError
from mtasts.net.smtp import SmtpProbe
from mtasts.sts.domain import normalise_host

Pair = tuple[str, str]  # (MX host name as the domain's MX record names it, address)


class PlanError(MtastsError, ValueError):
    """A shard, opt-out entry or scan name that cannot be used; the message says why."""


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) -> (K, N)."""
    head, sep, tail = text.partition("/")
    if not sep or not head.strip().isdigit() or not tail.strip().isdigit():
        raise PlanError(f"shard {text!r}: write K/N, e.g. 2/8")
    k, n = int(head), int(tail)
    if not 1 <= k <= n:
        raise PlanError(f"shard {text!r}: K must be between 1 and N")
    return k, n


def in_shard(domain: str, k: int, n: int) -> bool:
    """Whether ``domain`` belongs to shard ``k`` of ``n``: the same answer on every machine
    and in every run (a hash of the name, not the input order or Python's salted hash)."""
    digest = hashlib.sha256(domain.encode()).digest()
    return int.from_bytes(digest[:8], "big") % n == k - 1


def batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def check_scan_name(name: str) -> str:
    """Scan names go into EHLO, queue names and file names: letters, digits, '-', '_', '.'."""
    if not name or len(name) > 63 or not all(c.isalnum() or c in "-_." for c in name):
        raise PlanError(f"scan name {name!r}: use 1-63 letters, digits, '-', '_' or '.'")
    if not name.isascii():
        raise PlanError(f"scan name {name!r}: use ASCII letters")
    return name


def ehlo_name(scan: str) -> str:
    """The EHLO name that tells a provider's postmaster which scan knocked (RFC 5321 §4.1.1.1
    wants a domain; ``.invalid`` says it is not one to mail back to, RFC 6761 §6.4)."""
    label = "".join(c if c.isalnum() or c == "-" else "-" for c in scan.lower()).strip("-")
    return f"{label[:50] or 'scan'}.mtasts-scan.invalid"


def pairs_of(facts: DomainFacts) -> list[Pair]:
    """The (MX host, address) pairs a domain's judgement needs, each once, in MX order."""
    seen: dict[Pair, None] = {}
    for mx in facts.mx:
        for address in mx.addresses:
            seen.setdefault((mx.host, address.address), None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class ProbeJob:
    """Pairs of one MX address probed one after another by one job. Jobs with the same
    ``key`` never run at once (the engine's job lock), which is what caps the connections
    open to one address across every worker: ``per_address`` keys per address."""

    key: str
    pairs: tuple[Pair, ...]


def probe_jobs(pairs: Iterable[Pair], group: int, per_address: int) -> list[ProbeJob]:
    """Group pairs by address, at most ``group`` per job, each job keyed ``address#slot``.

    The slot comes from a hash of the job's first MX host name, so the jobs of a busy
    address spread over its ``per_address`` slots whichever batch or worker made them,
    and the same pairs get the same key on a second run."""
    by_address: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_address.setdefault(pair[1], []).append(pair)
    jobs = []
    size, slots = max(1, group), max(1, per_address)
    for address, found in by_address.items():
        for start in range(0, len(found), size):
            chunk = tuple(found[start : start + size])
            digest = hashlib.sha256(chunk[0][0].encode()).digest()
            slot = int.from_bytes(digest[:4], "big") % slots
            jobs.append(ProbeJob(f"{address}#{slot}", chunk))
    return jobs


def provider_of(host: str) -> str:
    """The mail provider an MX host belongs to, for per-provider limits and statistics: its
    registrable-looking suffix (the last two labels, three under a two-letter country code
    whose second level is short, as in ``mail.protection.outlook.com`` -> ``outlook.com``,
    ``mx.example.co.uk`` -> ``example.co.uk``). A heuristic, not the Public Suffix List."""
    labels = normalise_host(host).split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


@dataclass(frozen=True, slots=True)
class OptOut:
    """Who asked not to be scanned: domains (and their subdomains), MX host names (and their
    subdomains, written ``*.provider.example`` or ``provider.example``) and addresses/networks."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, lines: Iterable[tuple[str, str]]) -> tuple[OptOut, list[str]]:
        """From (text, where) lines; '#' comments. Bad entries come back as one line each."""
        names: set[str] = set()
        networks = []
        problems = []
        for text, where in lines:
            entry = text.split("#", 1)[0].strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = normalise_host(entry.removeprefix("*."))
            if not name or " " in name or "." not in name:
                problems.append(
                    f"{where}: {entry!r} is neither a domain, an MX host nor an address"
                )
                continue
            names.add(name)
        return cls(frozenset(names), tuple(networks)), problems

    def _named(self, name: str) -> bool:
        labels = normalise_host(name).split(".")
        return any(".".join(labels[i:]) in self.names for i in range(len(labels) - 1))

    def domain(self, domain: str) -> bool:
        return self._named(domain)

    def pair(self, pair: Pair) -> bool:
        host, address = pair
        if self._named(host):
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def with_probes(
    facts: DomainFacts, probes: Mapping[Pair, Sequence[SmtpProbe] | None]
) -> DomainFacts:
    """``facts`` (gathered without SMTP probes) with each address's shared probe filled in.

    A pair mapped to ``None`` was not probed (opted out): it leaves the address list and is
    counted in ``addresses_skipped``, which the judge reports as unprobed, as it does past
    ``--max-addresses``. A pair missing from ``probes`` is a caller's bug: KeyError."""
    mx = []
    for host in facts.mx:
        kept, skipped = [], host.addresses_skipped
        for address in host.addresses:
            found = probes[(host.host, address.address)]
            if found is None:
                skipped += 1
            else:
                kept.append(AddressFacts(address.address, tuple(found)))
        mx.append(dataclasses.replace(host, addresses=tuple(kept), addresses_skipped=skipped))
    return dataclasses.replace(facts, mx=tuple(mx))
