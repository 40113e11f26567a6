"""The one HTTPS policy fetcher, following RFC 8461 §3.3 to the letter.

GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` with a certificate
that must verify and name the policy host (§3.3 and RFC 6125), no redirect
followed (where it pointed is reported), a body limit (64 KiB, as §3.3
suggests) and a time limit. Status, media type and body are returned as facts;
judging them is the checker's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from mtasts.sts import cert_matches

from .dns import DnsLookupError, Resolver
from .tls import Leaf, Trust, client_context, trust_from_error

log = logging.getLogger("mtasts.net.https")
WELL_KNOWN = "/.well-known/mta-sts.txt"
MAX_BODY = 64 * 1024
_MAX_HEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class PolicyFetch:
    """Facts of one policy fetch. ``error_kind`` is None only when a response was read."""

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


class _TooLarge(Exception):
    pass


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return b"".join(chunks)
            if sum(map(len, chunks)) + size > MAX_BODY:
                raise _TooLarge
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise _TooLarge
        return await reader.readexactly(length)
    # No length given: the body ends when the server closes (RFC 9112 §6.3). One read()
    # returns only what has arrived, so keep reading to EOF, within the limit.
    body = bytearray()
    while chunk := await reader.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise _TooLarge
    return bytes(body)


async def _exchange(
    host: str, address: str, port: int, context: ssl.SSLContext, url: str
) -> PolicyFetch:
    reader, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=host)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        leaf = Leaf.from_der(der) if der else None
        if context.verify_mode == ssl.CERT_NONE:
            return PolicyFetch(url, address, leaf=leaf)
        if leaf is None or not cert_matches(leaf.dns_ids, host):
            names = ", ".join(leaf.dns_ids) if leaf else "none"
            return PolicyFetch(
                url, address, trust=Trust("certificate-host-mismatch"), leaf=leaf,
                error_kind="webpki", error=f"the certificate names {names}, not {host}",
            )  # fmt: skip
        suffix = f":{port}" if port != 443 else ""
        request = (
            f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {host}{suffix}\r\nUser-Agent: mtasts\r\n"
            "Accept: text/plain\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            raise _TooLarge
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        if (
            len(status_parts) < 2
            or not status_parts[0].startswith("HTTP/")
            or not status_parts[1].isdigit()
        ):
            return PolicyFetch(
                url,
                address,
                trust=Trust(None),
                leaf=leaf,
                error_kind="protocol",
                error=f"not an HTTP response: {lines[0][:60]!r}",
            )
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers.setdefault(key.strip().lower(), value.strip())
        status = int(status_parts[1])
        body = await _read_body(reader, headers) if status == 200 else None
        return PolicyFetch(
            url, address, status, headers.get("content-type"), body, headers.get("location"),
            Trust(None), leaf,
        )  # fmt: skip
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def fetch_policy(
    resolver: Resolver,
    domain: str,
    *,
    port: int = 443,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    leaf_on_failure: bool = True,
) -> PolicyFetch:
    """Fetch the policy of ``domain`` from ``mta-sts.<domain>`` (RFC 8461 §3.3).

    When the certificate does not verify, a second, unverified handshake reads its
    names and dates for the checker; the resolver, which shows no one, sets
    ``leaf_on_failure=False`` and spends no second connection per hostile domain.
    """
    host = f"mta-sts.{domain}"
    url = f"https://{host}{f':{port}' if port != 443 else ''}{WELL_KNOWN}"
    started = time.perf_counter()
    result = await _fetch(resolver, host, url, port, ca_file, timeout, leaf_on_failure)
    seconds = time.perf_counter() - started
    log.debug(
        "policy fetch url=%s outcome=%s seconds=%.3f",
        url,
        result.error_kind or result.status,
        seconds,
    )
    return dataclasses.replace(result, seconds=seconds)


async def _fetch(
    resolver: Resolver,
    host: str,
    url: str,
    port: int,
    ca_file: Path | None,
    timeout: float,
    leaf_on_failure: bool,
) -> PolicyFetch:
    try:
        addresses = (await resolver.lookup(host, "A")).records or (
            await resolver.lookup(host, "AAAA")
        ).records
    except DnsLookupError as exc:
        return PolicyFetch(url, error_kind="dns", error=f"cannot resolve {host}: {exc}")
    if not addresses:
        return PolicyFetch(url, error_kind="dns", error=f"{host} has no A or AAAA record")
    address = addresses[0]
    try:
        return await asyncio.wait_for(
            _exchange(host, address, port, client_context(ca_file), url), timeout
        )
    except ssl.SSLCertVerificationError as exc:
        trust = trust_from_error(exc)
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
            trust=trust,
            leaf=leaf,
            error_kind="webpki",
            error=f"certificate: {exc.verify_message}",
        )
    except TimeoutError:
        return PolicyFetch(
            url, address, error_kind="timeout", error=f"no complete answer within {timeout:g} s"
        )
    except _TooLarge:
        return PolicyFetch(
            url, address, error_kind="too-large", error=f"the body exceeds {MAX_BODY // 1024} KiB"
        )
    except ssl.SSLError as exc:
        return PolicyFetch(
            url, address, error_kind="tls", error=f"TLS handshake failed: {exc.reason or exc}"
        )
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        return PolicyFetch(
            url,
            address,
            error_kind="protocol",
            error=f"malformed HTTP response ({type(exc).__name__})",
        )
    except OSError as exc:
        return PolicyFetch(
            url,
            address,
            error_kind="connect",
            error=f"cannot connect to {address}:{port}: {exc.strerror or exc}",
        )
