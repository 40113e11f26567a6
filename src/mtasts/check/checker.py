"""One end-to-end check of many domains, done the way a sending MTA would (RFC 8461 §3-5).

The work is split in two: :mod:`.gather` collects facts over the network (DNS,
the policy fetch from every policy-host address, an SMTP probe of every address
of every MX) and :mod:`.judge` turns them into findings without any I/O. This
module runs the gathering for whole batches, in several processes when the
batch is large, and judges the batch at once, because one judgement belongs to
the whole run: whether port 25 was reachable from here at all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor

from mtasts.net.dns import Resolver
from mtasts.net.loop import run as run_fast
from mtasts.sts.domain import as_asked

from .facts import DomainFacts, TxtFacts
from .gather import CheckOptions, gather
from .judge import (
    AddressResult,
    DomainCheck,
    Expected,
    JudgeContext,
    MxResult,
    judge,
    smtp_blocked,
)
from .share import SharedLookups

log = logging.getLogger("mtasts.check")
_CHUNK = 100  # domains a worker process checks at a time

__all__ = [
    "AddressResult",
    "CheckInterrupted",
    "CheckOptions",
    "DomainCheck",
    "MxResult",
    "check_domain",
    "check_domains",
    "check_many",
    "gather_domains",
    "gather_many",
    "judge_all",
]


def judge_all(
    facts: list[DomainFacts],
    expected: Mapping[str, Expected] | None = None,
    now: dt.datetime | None = None,
) -> list[DomainCheck]:
    """Judge a run's facts; port 25 blocked for the whole run makes SMTP results unknown."""
    reachable = not smtp_blocked(facts)
    expected = expected or {}
    return [judge(f, JudgeContext(now, reachable, expected.get(f.domain))) for f in facts]


async def check_domain(
    domain: str, options: CheckOptions, resolver: Resolver | None = None
) -> DomainCheck:
    """Gather and judge one domain; network trouble becomes findings, never an exception."""
    return judge(await gather(domain, options, resolver))


async def gather_many(
    domains: list[str],
    options: CheckOptions,
    concurrency: int = 50,
    on_done: Callable[[DomainFacts], None] | None = None,
    probe_smtp: bool = True,
) -> list[DomainFacts]:
    resolver = Resolver(options.nameservers, timeout=options.timeout)
    limit = asyncio.Semaphore(concurrency)
    shared = SharedLookups()  # MX hosts named by several domains of the batch: once each

    async def one(domain: str) -> DomainFacts:
        async with limit:
            try:
                result = await gather(
                    domain, options, resolver, probe_smtp=probe_smtp, shared=shared
                )
            except Exception as exc:  # one domain's hostile DNS or servers never stop the batch
                log.error("check of %r failed: %r", domain, exc)
                result = DomainFacts(
                    as_asked(domain),
                    dt.datetime.now(dt.UTC),
                    TxtFacts(),
                    TxtFacts(),
                    gather_error=f"{type(exc).__name__}: {exc!s:.200}",
                )
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(one(d) for d in domains)))


async def check_many(
    domains: list[str], options: CheckOptions, concurrency: int = 50
) -> list[DomainCheck]:
    return judge_all(await gather_many(domains, options, concurrency))


def check_domains(
    domains: list[str],
    options: CheckOptions,
    concurrency: int = 50,
    workers: int = 1,
    on_done: Callable[[int], None] | None = None,
    expected: Mapping[str, Expected] | None = None,
) -> list[DomainCheck]:
    """:func:`gather_domains`, then :func:`judge_all`."""
    return judge_all(gather_domains(domains, options, concurrency, workers, on_done), expected)


def _advance(on_done: Callable[[int], None], count: int, future: Future[object]) -> None:
    if not future.cancelled() and future.exception() is None:  # a chunk really checked
        on_done(count)


def _gather_chunk(domains: list[str], options: CheckOptions, concurrency: int) -> list[DomainFacts]:
    return run_fast(gather_many(domains, options, concurrency))


def _ignore_sigint() -> None:
    """Ignore further SIGINTs: the caller is now reporting the interrupted run's results."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class CheckInterrupted(Exception):
    """Ctrl-C: ``partial`` holds the domains checked before it, in input order."""

    def __init__(self, partial: list[DomainFacts]) -> None:
        super().__init__(f"interrupted after {len(partial)} domains")
        self.partial = partial


def gather_domains(
    domains: list[str],
    options: CheckOptions,
    concurrency: int = 50,
    workers: int = 1,
    on_done: Callable[[int], None] | None = None,
) -> list[DomainFacts]:
    """Gather many domains, in ``workers`` processes when more than one (input order kept).

    TLS handshakes and DNS parsing are CPU work; one asyncio loop uses one core.
    Must be called with no event loop running (the workers are forked). Ctrl-C stops
    it at once and raises :class:`CheckInterrupted` with what was checked by then.
    """
    if workers <= 1 or len(domains) < 2 * _CHUNK:
        finished: list[DomainFacts] = []

        def done(check: DomainFacts) -> None:
            finished.append(check)
            if on_done:
                on_done(1)

        try:
            return run_fast(gather_many(domains, options, concurrency, done))
        except KeyboardInterrupt:
            _ignore_sigint()
            order = {name: n for n, name in enumerate(domains)}
            raise CheckInterrupted(sorted(finished, key=lambda c: order.get(c.domain, 0))) from None
    chunks = [domains[i : i + _CHUNK] for i in range(0, len(domains), _CHUNK)]
    per_worker = max(1, concurrency // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    futures = [pool.submit(_gather_chunk, chunk, options, per_worker) for chunk in chunks]
    if on_done is not None:
        for future, chunk in zip(futures, chunks, strict=True):
            future.add_done_callback(functools.partial(_advance, on_done, len(chunk)))
    try:
        results = [check for future in futures for check in future.result()]
    except KeyboardInterrupt:
        _ignore_sigint()  # a second Ctrl-C (or timeout(1)'s second signal) must not lose this
        # Do not wait for the chunks still running: the workers got the same SIGINT.
        partial = [
            c
            for f in futures
            if f.done() and not f.cancelled() and f.exception() is None
            for c in f.result()
        ]
        # No public way to stop running workers before Python 3.14's terminate_workers();
        # without it the interpreter's exit waits for every chunk in flight.
        running = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            process.terminate()
        raise CheckInterrupted(partial) from None
    pool.shutdown()
    return results
