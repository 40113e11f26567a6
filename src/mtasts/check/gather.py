"""Gather the facts of one domain the way a sending MTA meets them (RFC 8461 §3-5).

DNS (the two TXT records, MX, each MX host's addresses and TLSA records), the
policy fetch from every address of the policy host, and an SMTP STARTTLS probe
of every address of every MX, all at once. Nothing here decides anything: the
result is a :class:`~mtasts.check.facts.DomainFacts` for the judge.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mtasts.net.dns import Answer, DnsLookupError, Nameserver, Resolver
from mtasts.net.https import fetch_policies
from mtasts.net.smtp import SmtpProbe, probe_mx
from mtasts.sts.domain import as_asked, normalise_host
from mtasts.sts.record import VERSION
from mtasts.sts.taglist import begins_with_version

from .facts import AddressFacts, DomainFacts, MxFacts, TxtFacts
from .share import SharedLookups


@dataclass(frozen=True, slots=True)
class CheckOptions:
    nameservers: tuple[Nameserver, ...] = ()
    ca_file: Path | None = None
    smtp_port: int = 25
    https_port: int = 443
    timeout: float = 10.0
    probes: int = 1
    # Caps on what one domain's DNS can make the checker do (a hostile zone can list
    # thousands of MX hosts or addresses); the excess is reported, never probed.
    max_mx: int = 16
    max_addresses: int = 8


async def _txt(resolver: Resolver, name: str) -> TxtFacts:
    try:
        return TxtFacts.from_wire(await resolver.txt(name))
    except DnsLookupError as exc:
        return TxtFacts(error=str(exc))


async def _host_answers(resolver: Resolver, host: str) -> tuple[Answer, Answer, Answer] | str:
    """A, AAAA and TLSA answers of an MX host, or why DNS did not give them."""
    try:
        v4, v6, tlsa = await asyncio.gather(
            resolver.lookup(host, "A"),
            resolver.lookup(host, "AAAA"),
            resolver.lookup(f"_25._tcp.{host}", "TLSA"),
        )
    except DnsLookupError as exc:
        return str(exc)
    return v4, v6, tlsa


async def _mx_host(
    resolver: Resolver,
    host: str,
    preference: int,
    options: CheckOptions,
    probe_smtp: bool,
    shared: SharedLookups | None,
) -> MxFacts:
    if shared is None:
        answers = await _host_answers(resolver, host)
    else:
        answers = await shared.once(("mx", host), lambda: _host_answers(resolver, host))
    if isinstance(answers, str):
        return MxFacts(host, preference, dns_error=answers)
    v4, v6, tlsa = answers
    # Sorted so reports and JSON are stable whatever order the DNS server rotates.
    addresses = sorted(v4.records, key=ipaddress.ip_address) + sorted(
        v6.records, key=ipaddress.ip_address
    )
    kept = addresses[: options.max_addresses]

    async def probes(address: str) -> tuple[SmtpProbe, ...]:
        done = []
        for _ in range(options.probes):
            done.append(
                await probe_mx(
                    host,
                    address,
                    port=options.smtp_port,
                    ca_file=options.ca_file,
                    timeout=options.timeout,
                )
            )
        return tuple(done)

    async def probe(address: str) -> AddressFacts:
        if not probe_smtp:  # a scan probes each (host, address) once for all its domains
            return AddressFacts(address, ())
        if shared is None:
            return AddressFacts(address, await probes(address))
        # The same host name and address give the same handshake, whichever domain names
        # the host: one probe for all of them (RFC 8461 §4.1 matches the host name, which
        # is part of the key).
        return AddressFacts(
            address, await shared.once(("probe", host, address), lambda: probes(address))
        )

    return MxFacts(
        host,
        preference,
        cname=v4.canonical or v6.canonical,
        tlsa=bool(tlsa.records),
        tlsa_validated=bool(tlsa.records) and tlsa.authenticated,
        addresses=tuple(await asyncio.gather(*(probe(a) for a in kept))),
        addresses_skipped=len(addresses) - len(kept),
    )


async def gather(
    domain: str,
    options: CheckOptions,
    resolver: Resolver | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    probe_smtp: bool = True,
    shared: SharedLookups | None = None,
) -> DomainFacts:
    """Every fact about ``domain``; network trouble is recorded as a fact, never raised.

    Without ``probe_smtp`` each MX address is listed with no probe: ``mtasts scan`` probes
    every (MX host, address) pair once per scan and fills them in (``scan.plan``). With
    ``shared``, MX hosts other domains of the batch name are looked up and probed once."""
    domain = as_asked(domain)  # a U-label name is asked by its A-label (IDNA)
    resolver = resolver or Resolver(options.nameservers, timeout=options.timeout)
    observed_at = clock()
    sts_txt, rpt_txt, mx_answer = await asyncio.gather(
        _txt(resolver, f"_mta-sts.{domain}"),
        _txt(resolver, f"_smtp._tls.{domain}"),
        _mx_answer(resolver, domain),
    )
    fetch = None
    # RFC 8461 §3.3: a sender fetches only when a record invites it; a broken record
    # is still worth fetching for, to show what the policy host would serve.
    if any(begins_with_version(t, VERSION) for t in sts_txt.texts):
        fetch = asyncio.ensure_future(
            fetch_policies(
                resolver,
                domain,
                port=options.https_port,
                ca_file=options.ca_file,
                timeout=options.timeout,
                max_addresses=options.max_addresses,
            )
        )
    if isinstance(mx_answer, str):
        records, mx_error, exists = [], mx_answer, True
    else:
        records, mx_error, exists = mx_answer[0], None, mx_answer[1]
    kept = sorted(records)[: options.max_mx]  # the most preferred, as senders try them
    mx = await asyncio.gather(
        *(
            _mx_host(resolver, host, pref, options, probe_smtp, shared)
            for pref, host in kept
            if host not in ("", ".")
        )
    )
    return DomainFacts(
        domain=domain,
        observed_at=observed_at,
        sts_txt=sts_txt,
        tlsrpt_txt=rpt_txt,
        domain_exists=exists,
        mx_error=mx_error,
        mx_listed=len(records),
        mx_skipped=len(records) - len(kept),
        mx=tuple(mx),
        policy=await fetch if fetch is not None else (),
    )


async def _mx_answer(resolver: Resolver, domain: str) -> tuple[list[tuple[int, str]], bool] | str:
    """(preference, host) pairs and whether the domain exists, or why DNS did not answer."""
    try:
        answer = await resolver.lookup(domain, "MX")
    except DnsLookupError as exc:
        return str(exc)
    pairs = sorted(
        (value[0], normalise_host(value[1]))
        for value in answer.values
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str)
    )
    return pairs, not answer.nxdomain
