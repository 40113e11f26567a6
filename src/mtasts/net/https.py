"""The one HTTPS policy fetcher (RFC 8461 §3.3): facts only, judged by ``sts.judge_response``.

GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` over a handshake that
verifies the chain (the name is matched by the judge, RFC 6125 rules), with no
redirect followed (where it pointed is reported), a body limit (64 KiB, as §3.3
suggests) and a time limit. HTTP/1.1 is parsed by h11. :func:`fetch_policies`
asks every address of the policy host, since a load-balanced policy host fails
intermittently exactly like a load-balanced MX, and takes a second look at an address
that never answered (see :func:`_looked_twice`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import h11

from mtasts.sts.names import MAX_POLICY_SIZE, WELL_KNOWN_PATH, policy_host

from .dns import Answer, DnsLookupError, Resolver
from .tls import Leaf, Trust, client_context, trust_from_error

log = logging.getLogger("mtasts.net.https")
MAX_BODY = MAX_POLICY_SIZE
_MAX_HEAD = 16 * 1024
_READ = 64 * 1024
_SECOND_LOOK_PAUSE = 1.0  # seconds between a fetch that got no answer and its second look


@dataclass(frozen=True, slots=True)
class PolicyFetch:
    """Facts of one policy fetch from one address. ``error_kind`` is None only when a
    response was read; see ``sts.PolicyResponse`` for what each field means."""

    url: str
    address: str | None = None
    status: int | None = None
    content_type: str | None = None
    body: bytes | None = None
    location: str | None = None
    trust: Trust | None = None
    leaf: Leaf | None = None
    error_kind: str | None = None  # dns | connect | timeout | tls | webpki | too-large | protocol
    error: str | None = None
    seconds: float = 0.0
    tries: int = 1  # 2: the first connection got no answer and this is the second look

    @property
    def certificate_names(self) -> tuple[str, ...] | None:
        return self.leaf.dns_ids if self.leaf is not None else None


@dataclass(slots=True)
class _Progress:
    """How far one exchange got before it failed."""

    answered: bool = False  # the server sent the first bytes of an HTTP response


class _TooLarge(Exception):
    pass


class _NotHttp(Exception):
    pass


def _request(conn: h11.Connection, host: str, port: int) -> bytes:
    authority = host if port == 443 else f"{host}:{port}"
    headers = [
        ("Host", authority),
        ("User-Agent", "mtasts"),
        ("Accept", "text/plain"),
        ("Connection", "close"),
    ]
    request = conn.send(h11.Request(method="GET", target=WELL_KNOWN_PATH, headers=headers))
    return request + (conn.send(h11.EndOfMessage()) or b"")


async def _response(
    conn: h11.Connection, reader: asyncio.StreamReader, progress: _Progress
) -> tuple[h11.Response, bytes | None]:
    """The response head and, for a 200, its body within MAX_BODY (any framing h11 knows)."""
    head: h11.Response | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _NotHttp(str(exc)) from None
        if event is h11.NEED_DATA:
            data = await reader.read(_READ)
            progress.answered = progress.answered or bool(data)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            head = event
            if head.status_code != 200:
                return head, None  # RFC 8461 §3.3: only a 200 carries a policy
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _TooLarge
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if head is None:
                raise _NotHttp("the connection closed before a response")
            return head, bytes(body)


def _header(head: h11.Response, name: bytes) -> str | None:
    for key, value in head.headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _exchange(
    host: str,
    address: str,
    port: int,
    context: ssl.SSLContext,
    url: str,
    progress: _Progress | None = None,
) -> PolicyFetch:
    reader, writer = await asyncio.open_connection(
        address, port, ssl=context, server_hostname=host, limit=_READ
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        leaf = Leaf.from_der(der) if der else None
        if context.verify_mode == ssl.CERT_NONE:
            return PolicyFetch(url, address, leaf=leaf)
        # One h11 connection sends the request and reads the answer, which it frames by it.
        conn = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        writer.write(_request(conn, host, port))
        await writer.drain()
        head, body = await _response(conn, reader, progress or _Progress())
        return PolicyFetch(
            url,
            address,
            head.status_code,
            _header(head, b"content-type"),
            body,
            _header(head, b"location"),
            Trust(True),
            leaf,
        )
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def policy_url(domain: str, port: int = 443) -> str:
    return f"https://{policy_host(domain)}{f':{port}' if port != 443 else ''}{WELL_KNOWN_PATH}"


async def fetch_policy(
    resolver: Resolver,
    domain: str,
    *,
    port: int = 443,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    leaf_on_failure: bool = True,
    asked: asyncio.Future[Answer] | None = None,
) -> PolicyFetch:
    """Fetch the policy of ``domain`` from the first address of ``mta-sts.<domain>``, as a
    sender does. When the chain does not verify, a second, unverified handshake reads the
    certificate's names and dates for the checker; the resolver, which shows no one, sets
    ``leaf_on_failure=False`` and spends no second connection per hostile domain.
    ``asked`` is the policy host's A lookup when the caller started it already."""
    host, url = policy_host(domain), policy_url(domain, port)
    addresses = await _addresses(resolver, host, asked=asked)
    if isinstance(addresses, PolicyFetch):
        return dataclasses.replace(addresses, url=url)
    return await _timed(host, addresses[0], url, port, ca_file, timeout, leaf_on_failure)


async def fetch_policies(
    resolver: Resolver,
    domain: str,
    *,
    port: int = 443,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    max_addresses: int = 8,
) -> tuple[PolicyFetch, ...]:
    """The fetch from every address (A, then AAAA, each sorted) of the policy host, at once."""
    host, url = policy_host(domain), policy_url(domain, port)
    addresses = await _addresses(resolver, host, every=True)
    if isinstance(addresses, PolicyFetch):
        return (dataclasses.replace(addresses, url=url),)
    return tuple(
        await asyncio.gather(
            *(
                _looked_twice(host, a, url, port, ca_file, timeout)
                for a in addresses[:max_addresses]
            )
        )
    )


async def _looked_twice(
    host: str, address: str, url: str, port: int, ca_file: Path | None, timeout: float
) -> PolicyFetch:
    """The checker's fetch from one address: when the first connection got no answer at
    all (refused, reset, or silent until the timeout), a second one after a pause.

    A checker or a scan that calls a policy host broken for one dropped SYN or one burst
    of its own load gives a false alarm; senders retry a failed fetch later (RFC 8461
    §3.3 leaves them on their cached policy meanwhile), so one lost connection is not what
    they see. A server that began to answer and then stalled (a slow body) is judged on
    what it did: that is the server, not the path. The resolver fetches once, as a sender
    does, and refreshes on its own schedule."""
    progress = _Progress()
    first = await _timed(host, address, url, port, ca_file, timeout, True, progress)
    if first.error_kind not in ("connect", "timeout") or progress.answered:
        return first
    await asyncio.sleep(_SECOND_LOOK_PAUSE)
    second = await _timed(host, address, url, port, ca_file, timeout, True)
    error = second.error
    if error is not None and error == first.error:
        error = f"{error} (twice, {_SECOND_LOOK_PAUSE:g} s apart)"
    elif error is not None:
        error = f"{error} (on a second look; {_SECOND_LOOK_PAUSE:g} s earlier: {first.error})"
    return dataclasses.replace(second, tries=2, error=error)


async def _addresses(
    resolver: Resolver,
    host: str,
    every: bool = False,
    asked: asyncio.Future[Answer] | None = None,
) -> list[str] | PolicyFetch:
    try:
        if every:
            v4, v6 = await asyncio.gather(resolver.lookup(host, "A"), resolver.lookup(host, "AAAA"))
            found = sorted(v4.records, key=ipaddress.ip_address) + sorted(
                v6.records, key=ipaddress.ip_address
            )
        else:
            v4 = await asked if asked is not None else await resolver.lookup(host, "A")
            found = list(v4.records) or list((await resolver.lookup(host, "AAAA")).records)
    except DnsLookupError as exc:
        return PolicyFetch("", error_kind="dns", error=f"cannot resolve {host}: {exc}")
    if not found:
        return PolicyFetch("", error_kind="dns", error=f"{host} has no A or AAAA record")
    return found


async def _timed(
    host: str,
    address: str,
    url: str,
    port: int,
    ca_file: Path | None,
    timeout: float,
    leaf_on_failure: bool,
    progress: _Progress | None = None,
) -> PolicyFetch:
    started = time.perf_counter()
    result = await _fetch(host, address, url, port, ca_file, timeout, leaf_on_failure, progress)
    seconds = time.perf_counter() - started
    log.debug(
        "policy fetch url=%s address=%s outcome=%s seconds=%.3f",
        url,
        address,
        result.error_kind or result.status,
        seconds,
    )
    return dataclasses.replace(result, seconds=seconds)


async def _fetch(
    host: str,
    address: str,
    url: str,
    port: int,
    ca_file: Path | None,
    timeout: float,
    leaf_on_failure: bool,
    progress: _Progress | None = None,
) -> PolicyFetch:
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the exchange in a
        # task of its own, one more per policy fetch.
        async with asyncio.timeout(timeout):
            return await _exchange(host, address, port, client_context(ca_file), url, progress)
    except ssl.SSLCertVerificationError as exc:
        leaf = None
        if leaf_on_failure:
            with contextlib.suppress(Exception):
                unverified = await asyncio.wait_for(
                    _exchange(host, address, port, client_context(ca_file, verify=False), url),
                    timeout,
                )
                leaf = unverified.leaf
        return PolicyFetch(
            url,
            address,
            trust=trust_from_error(exc),
            leaf=leaf,
            error_kind="webpki",
            error=f"certificate: {exc.verify_message}",
        )
    except TimeoutError:
        error = f"no complete answer within {timeout:g} s"
        return PolicyFetch(url, address, error_kind="timeout", error=error)
    except _TooLarge:
        error = f"the body exceeds {MAX_BODY // 1024} KiB"
        return PolicyFetch(url, address, error_kind="too-large", error=error)
    except _NotHttp as exc:
        return PolicyFetch(
            url, address, error_kind="protocol", error=f"not an HTTP response: {exc}"
        )
    except ssl.SSLError as exc:
        error = f"TLS handshake failed: {exc.reason or exc}"
        return PolicyFetch(url, address, error_kind="tls", error=error)
    except OSError as exc:
        error = f"cannot connect to {address}:{port}: {exc.strerror or exc}"
        return PolicyFetch(url, address, error_kind="connect", error=error)
