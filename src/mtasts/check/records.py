"""What a domain publishes in DNS for MTA-STS and TLS-RPT, read and judged by the RFC parsers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from mtasts import sts, tlsrpt
from mtasts.net.dns import DnsLookupError, Resolver


@dataclass(frozen=True, slots=True)
class RecordSurvey:
    domain: str
    sts_record: str | None  # the record's wire form when valid
    sts_problem: str | None
    tlsrpt_record: str | None
    tlsrpt_problem: str | None


async def survey(resolver: Resolver, domain: str) -> RecordSurvey:
    sts_text, sts_problem = await _read(
        resolver, f"_mta-sts.{domain}", sts.select_record, sts.StsError
    )
    rpt_text, rpt_problem = await _read(
        resolver, f"_smtp._tls.{domain}", tlsrpt.select_record, tlsrpt.TlsRptError
    )
    return RecordSurvey(domain, sts_text, sts_problem, rpt_text, rpt_problem)


async def _read(
    resolver: Resolver,
    name: str,
    select: Callable[[list[list[bytes]]], object],
    error: type[Exception],
) -> tuple[str | None, str | None]:
    try:
        return str(select(await resolver.txt(name))), None
    except DnsLookupError as exc:
        return None, f"DNS lookup failed: {exc}"
    except error as exc:
        return None, str(exc)


async def survey_all(
    resolver: Resolver, domains: list[str], concurrency: int = 50
) -> list[RecordSurvey]:
    limit = asyncio.Semaphore(concurrency)

    async def one(domain: str) -> RecordSurvey:
        async with limit:
            return await survey(resolver, domain)

    return list(await asyncio.gather(*(one(d) for d in domains)))
