"""Discover, fetch and cache policies for Postfix lookups, following RFC 8461 §5.1."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mtasts import sts
from mtasts.net.dns import Answer, DnsLookupError, Resolver, mx_pairs
from mtasts.net.https import PolicyFetch, fetch_policy
from mtasts.sts.cache import (
    Action,
    CachedPolicy,
    Decision,
    FetchFailure,
    after_failed_fetch,
    decide,
)
from mtasts.sts.domain import as_asked

from .answers import AnswerLog
from .store import PolicyStore

log = logging.getLogger("mtasts.resolver")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    https_port: int = 443
    ca_file: Path | None = None
    timeout: float = 10.0
    # Answers within this many seconds of the last DNS check come straight from memory
    # (negative ones too: a domain without a policy is not asked again for that long).
    grace: float = 60.0
    # Bounds on what the domains Postfix asks about may cost (security review #11, #18):
    # anyone who can make the MTA send mail chooses those domains.
    max_domains: int = 100_000  # per-domain state kept in memory (least recently used goes)
    max_discoveries: int = 256  # DNS + HTTPS discoveries running at once, all domains together
    max_dane_mx: int = 16  # MX hosts whose TLSA records are asked; more: no DANE answer
    # RFC 7672 §2 expects a validating resolver on the same host: the AD bit from any other
    # travels unprotected and can be forged to turn enforce into opportunistic TLS.
    trust_ad: bool = False
    warn_every: float = 600.0  # seconds between two warnings about one domain


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the engine concluded for one domain, and why (for logs and `resolver query`)."""

    domain: str
    cached: CachedPolicy | None
    source: str  # memory | cache | fetched | none
    reason: str
    # Every MX publishes DNSSEC-validated TLSA records: DANE, not MTA-STS, applies (RFC 8461 §2).
    dane: bool = False
    # Then, per MX host, its TLSA records in presentation form: the policy the reporter
    # names for a session under DANE (RFC 8460 §4.4, policy-type tlsa).
    tlsa: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The RFC 8460 §4.3.2.2 result type when a published policy could not be used.
    failure: str = ""


@dataclass(slots=True)
class Standing:
    """What the engine last concluded for one domain, and until when that answer stands.

    The object is kept for the domain's life in memory, so a reply prepared from
    ``answer`` stays right while ``answer`` is still this very Lookup and the clock
    is before ``until`` (no lookup of the domain, no formatting).
    """

    checked_at: float = 0.0
    answer: Lookup | None = None
    failure: FetchFailure | None = None
    # The last check plus the grace period, or the cached policy's expiry if sooner
    # (RFC 8461 §3.2: an expired policy is never applied, even from memory).
    until: float = 0.0

    def settle(self, answer: Lookup, now: float, grace: float) -> None:
        self.checked_at, self.answer = now, answer
        expiry = answer.cached.expires_at if answer.cached is not None else now + grace
        self.until = min(now + grace, expiry)


@dataclass
class Metrics:
    lookups: Counter[str] = field(default_factory=Counter)
    fetch_failures: Counter[str] = field(default_factory=Counter)
    fetches: int = 0


def usable_policy(fetch: PolicyFetch) -> tuple[sts.Policy | None, str]:
    """RFC 8461 §3.3 as ``sts.judge_response`` decides it: the policy, or the failure's reason
    (a fetch-error kind, ``http-404``, ``media-type``, ``certificate-name``, ``invalid-policy``)."""
    verdict = sts.judge_response(urlsplit(fetch.url).hostname or "", fetch)
    failure = verdict.first_failure
    return verdict.policy, failure.reason if failure else ""


class PolicyEngine:
    def __init__(
        self,
        resolver: Resolver,
        store: PolicyStore,
        options: EngineOptions,
        clock: Callable[[], float] = time.time,
        answers: AnswerLog | None = None,
    ) -> None:
        self.resolver = resolver
        self.answers = answers
        self.store = store
        self.options = options
        self.clock = clock
        self.metrics = Metrics()
        self._states: OrderedDict[str, Standing] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Lookup]] = {}
        self._discovering = asyncio.Semaphore(options.max_discoveries)
        self._warned: OrderedDict[str, float] = OrderedDict()

    @property
    def asks_dane(self) -> bool:
        """Whether DANE's questions are worth asking: the DNS server's AD bit is trusted
        (RFC 7672 §2) and it has set one, so it validates."""
        return self.options.trust_ad and self.resolver.validates

    def remembered(self, domain: str) -> Lookup | None:
        """The answer given within the last ``grace`` seconds, with no I/O; None when stale."""
        standing = self.standing(domain)
        return standing.answer if standing is not None else None

    def standing(self, domain: str) -> Standing | None:
        """The domain's answer while it stands (see :class:`Standing`), counted as a memory hit."""
        state = self._states.get(domain)
        if state is None or state.answer is None or self.clock() >= state.until:
            return None
        self.metrics.lookups["memory"] += 1
        return state

    async def lookup(self, domain: str) -> Lookup:
        """The policy to apply to ``domain`` now; concurrent lookups of one domain share the work."""
        domain = as_asked(domain)  # an SMTPUTF8 recipient's domain is asked by its A-label
        answer = self.remembered(domain)
        if answer is not None:
            return answer
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.ensure_future(self._discover(domain))
            self._inflight[domain] = task
            task.add_done_callback(lambda _t: self._inflight.pop(domain, None))
        return await asyncio.shield(task)

    async def _record_id(self, domain: str) -> tuple[str | None, str]:
        try:
            records = await self.resolver.txt(f"_mta-sts.{domain}")
        except DnsLookupError as exc:
            return None, f"DNS failed ({exc})"
        try:
            return sts.select_record(records).id, ""
        except sts.NoRecordError:
            return None, "no _mta-sts record"
        except sts.RecordError as exc:
            return None, f"invalid _mta-sts record: {exc.message}"

    def _state(self, domain: str) -> Standing:
        state = self._states.pop(domain, None) or Standing()
        self._states[domain] = state  # most recently used last
        while len(self._states) > self.options.max_domains:
            _, gone = self._states.popitem(last=False)  # its cached policy stays in the store
            gone.answer = None  # a reply prepared from it must not outlive it
        return state

    async def _discover(self, domain: str, *, force_fetch: bool = False) -> Lookup:
        async with self._discovering:
            return await self._discover_now(domain, force_fetch=force_fetch)

    async def _discover_now(self, domain: str, *, force_fetch: bool) -> Lookup:
        state = self._state(domain)
        # A domain with nothing cached is fetched as soon as it has a record: its policy
        # host's address is asked alongside the record (issue #16: independent questions
        # in parallel), at the cost of one unused question for a domain without MTA-STS.
        asked = (
            asyncio.ensure_future(self.resolver.lookup(sts.policy_host(domain), "A"))
            if self.store.get(domain) is None and state.failure is None
            else None
        )
        try:
            return await self._discover_with(domain, state, force_fetch, asked)
        finally:
            if asked is not None:
                _discard(asked)

    async def _discover_with(
        self,
        domain: str,
        state: Standing,
        force_fetch: bool,
        asked: asyncio.Future[Answer] | None,
    ) -> Lookup:
        record_id, problem = await self._record_id(domain)
        now = self.clock()
        cached = self.store.get(domain)
        if record_id is not None and (
            cached is None or cached.policy_id != record_id or cached.expired(now)
        ):
            # Another MTA sharing the store may have fetched this id already.
            cached = await self.store.load(domain)
        decision = decide(
            record_id, cached, state.failure, now, record_problem=problem or "no record"
        )
        if force_fetch and record_id is not None:
            decision = Decision(Action.FETCH, "proactive refresh", decision.cached)
        # A domain that may have a policy may also be DANE-enabled: ask while the policy is
        # fetched, unless the DNS servers have never validated an answer (no AD bit yet):
        # then no MX list can be secure, and RFC 7672 §2.2.1 needs a secure one for DANE.
        dane = None
        if self.asks_dane and (record_id is not None or decision.cached is not None):
            dane = asyncio.ensure_future(self._dane(domain))
        try:
            if decision.action is Action.FETCH and record_id is not None:
                answer = await self._fetch(domain, record_id, cached, state, asked)
            elif decision.action is Action.USE_CACHED:
                answer = Lookup(domain, decision.cached, "cache", decision.reason)
            else:
                answer = Lookup(domain, None, "none", decision.reason)
            applies = answer.cached is not None and answer.cached.policy.mode is not sts.Mode.NONE
            tlsa = await dane if applies and dane is not None else ()
            if tlsa:
                reason = f"{answer.reason}; DNSSEC-signed TLSA on every MX: DANE applies"
                answer = dataclasses.replace(answer, dane=True, reason=reason, tlsa=tlsa)
        finally:
            if dane is not None and not dane.done():
                dane.cancel()
        self.metrics.lookups[answer.source] += 1
        state.settle(answer, self.clock(), self.options.grace)
        if self.answers is not None:
            self._log_answer(answer)
        return answer

    def _log_answer(self, answer: Lookup) -> None:
        """Keep what Postfix was told, for the reporter's join with Postfix's log."""
        assert self.answers is not None
        cached = answer.cached
        try:
            if answer.dane:
                # One line per record, "MX-HOST RDATA": the reporter picks the session's MX.
                text = "\n".join(f"{host} {rdata}" for host, rr in answer.tlsa for rdata in rr)
                self.answers.record(answer.domain, self.clock(), "tlsa", None, text, answer.reason)
            elif cached is not None and cached.policy.mode is not sts.Mode.NONE:
                self.answers.record(
                    answer.domain, self.clock(), "policy", cached.policy_id, str(cached.policy), ""
                )
            else:
                kind = answer.failure if answer.failure and cached is None else "none"
                self.answers.record(answer.domain, self.clock(), kind, None, None, answer.reason)
        except Exception as exc:  # the reporter's record must never cost Postfix an answer
            log.warning("answer log write failed domain=%r: %s", answer.domain, exc)

    async def _dane(self, domain: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Each MX host's TLSA records when the MX list and all of them are DNSSEC-validated
        (AD); empty otherwise.

        Postfix's policy table speaks for the whole domain, so a partly DANE-enabled
        domain keeps its MTA-STS answer: ``dane`` would drop to opportunistic TLS on
        the MX hosts that have no TLSA. An MX list that is not validated ends the
        question before any TLSA is asked: RFC 7672 §2.2.1 only allows (MAY) DANE for
        MX hosts from an insecure MX RRset, and for such a domain the MTA-STS policy,
        whose mx patterns came over authenticated HTTPS, is the stronger guarantee.
        That is nearly every domain, and every one when the DNS server does not validate.
        """
        try:
            mx = await self.resolver.lookup(domain, "MX")
            hosts = [host for _, host in mx_pairs(mx)]
            if not mx.authenticated or not hosts or len(hosts) > self.options.max_dane_mx:
                return ()  # too many to ask for every lookup: MTA-STS answers alone
            answers = await asyncio.gather(
                *(self.resolver.lookup(f"_25._tcp.{h}", "TLSA") for h in hosts)
            )
        except DnsLookupError:
            return ()
        if not all(a.records and a.authenticated for a in answers):
            return ()
        return tuple((host, a.records) for host, a in zip(hosts, answers, strict=True))

    async def _fetch(
        self,
        domain: str,
        record_id: str,
        cached: CachedPolicy | None,
        state: Standing,
        asked: asyncio.Future[Answer] | None = None,
    ) -> Lookup:
        self.metrics.fetches += 1
        fetch = await fetch_policy(
            self.resolver,
            domain,
            port=self.options.https_port,
            ca_file=self.options.ca_file,
            timeout=self.options.timeout,
            leaf_on_failure=False,
            asked=asked,
        )
        verdict = sts.judge_response(sts.policy_host(domain), fetch)
        policy = verdict.policy
        reason = verdict.failures[0].reason if verdict.failures else ""
        kind = str(verdict.failures[0].kind) if verdict.failures else ""
        now = self.clock()
        if policy is None:
            self.metrics.fetch_failures[reason] += 1
            state.failure = FetchFailure(record_id, now, reason)
            decision = after_failed_fetch(cached, now, reason)
            quiet = cached is not None and cached.policy.mode is sts.Mode.NONE
            # RFC 8461 §5: tell the admin about failures, unless the domain has withdrawn MTA-STS;
            # once per warn_every per domain, so a failing domain cannot flood the log.
            (log.debug if quiet or not self._may_warn(domain, now) else log.warning)(
                "policy fetch failed domain=%r id=%r reason=%s detail=%r",
                domain,
                record_id,
                reason,
                fetch.error,
            )
            source = "cache" if decision.action is Action.USE_CACHED else "none"
            return Lookup(domain, decision.cached, source, decision.reason, failure=kind)
        state.failure = None
        fresh = CachedPolicy(domain, policy, record_id, now)
        self.store.put(fresh)
        log.info(
            "policy fetched domain=%r id=%r mode=%s max_age=%d",
            domain,
            record_id,
            policy.mode,
            policy.max_age,
        )
        return Lookup(domain, fresh, "fetched", f"fetched policy id {record_id}")

    def _may_warn(self, domain: str, now: float) -> bool:
        last = self._warned.pop(domain, None)
        if last is not None and now - last < self.options.warn_every:
            self._warned[domain] = last
            return False
        self._warned[domain] = now
        while len(self._warned) > self.options.max_domains:
            self._warned.popitem(last=False)
        return True

    async def refresh_due(self) -> int:
        """Proactively refetch cached policies that are due (RFC 8461 §5.1); returns how many."""
        now = self.clock()
        due = [
            c.domain
            for c in self.store.all()
            if c.refresh_due(now) and c.domain not in self._inflight
        ]
        await asyncio.gather(*(self._discover(d, force_fetch=True) for d in due))
        return len(due)


def _discard(task: asyncio.Future[Answer]) -> None:
    """Drop a lookup started ahead that was not needed (or has been used)."""
    task.cancel()
    # A cancelled lookup may still end in its own error (Python 3.11's wait_for returns
    # what its future holds): retrieve it, or asyncio logs it as never retrieved.
    task.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Future[Answer]) -> None:
    if not task.cancelled():
        task.exception()
