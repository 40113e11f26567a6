"""The SMTP STARTTLS probe (RFC 3207), as a sending MTA would connect to an MX address.

Connect, read the greeting, EHLO, look for STARTTLS, upgrade with the chain
verified (hostname matching is RFC 8461 §4.2's, done by the checker), and
record the TLS version, cipher and the leaf certificate. When the chain does
not verify, a second, unverified handshake fetches the leaf so the checker can
still say which names and dates it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .tls import Leaf, Trust, client_context, quiet_start_tls_eof, trust_from_error

log = logging.getLogger("mtasts.net.smtp")
_QUIT_WAIT = 2.0  # seconds to wait for the answer to QUIT
HELO_NAME = "mtasts-check.invalid"


@dataclass(frozen=True, slots=True)
class SmtpProbe:
    """Facts of one probe. ``error_kind``: connect, timeout, greeting, starttls, handshake."""

    host: str
    address: str
    port: int
    connected: bool = False
    banner: str | None = None
    starttls: bool | None = None
    tls_version: str | None = None
    cipher: str | None = None
    trust: Trust | None = None
    leaf: Leaf | None = None
    error_kind: str | None = None
    error: str | None = None
    seconds: float = 0.0


class _Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets. Real servers send a dozen
# EHLO lines; the bounds stop a hostile MX from holding a probe's memory or time.
MAX_REPLY_LINES = 100
MAX_REPLY_BYTES = 16 * 1024


async def _reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    """One SMTP reply: the code and its text lines (RFC 5321 §4.2 multi-line form)."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            raw = await reader.readline()
        except ValueError:  # LimitOverrunError's wrapper: a line past the stream's 64 KiB limit
            raise _Failure("protocol", "a reply line longer than 64 KiB") from None
        size += len(raw)
        if len(lines) >= MAX_REPLY_LINES or size > MAX_REPLY_BYTES:
            raise _Failure(
                "protocol",
                f"a reply of over {MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES:,} bytes",
            )
        if not raw:
            raise _Failure(
                "greeting" if not lines else "protocol", "the server closed the connection"
            )
        line = raw.decode("latin-1").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit():
            raise _Failure("protocol", f"not an SMTP reply: {line[:60]!r}")
        lines.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), lines


@dataclass
class _Progress:
    """How far a session got, readable by the caller when an exception cuts it short."""

    connected: bool = False
    banner: str | None = None
    starttls: bool | None = None
    finished: SmtpProbe | None = None  # every fact is in; only the goodbye is left


async def _quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """QUIT, and wait (briefly) for the 221 before closing: RFC 5321 §4.1.1.10 has the
    sender wait for the reply, and a server that has answered is done with the session, so
    the next probe of the same address never overlaps this one in the server's count."""
    with contextlib.suppress(Exception):
        writer.write(b"QUIT\r\n")
        await asyncio.wait_for(_reply(reader), _QUIT_WAIT)


async def _session(
    probe: SmtpProbe,
    context: ssl.SSLContext,
    progress: _Progress,
    helo: str = HELO_NAME,
    source: str | None = None,
) -> SmtpProbe:
    reader, writer = await asyncio.open_connection(
        probe.address, probe.port, local_addr=(source, 0) if source else None
    )
    progress.connected = True
    probe = replace(probe, connected=True)
    try:
        code, banner = await _reply(reader)
        progress.banner = banner[0] if banner else ""
        probe = replace(probe, banner=progress.banner)
        if code != 220:
            raise _Failure("greeting", f"greeting {code} {banner[0] if banner else ''}")
        writer.write(f"EHLO {helo}\r\n".encode())
        code, caps = await _reply(reader)
        offered = code == 250 and any(c.strip().upper() == "STARTTLS" for c in caps[1:])
        progress.starttls = offered
        probe = replace(probe, starttls=offered)
        if not offered:
            progress.finished = probe
            await _quit(reader, writer)
            return probe
        writer.write(b"STARTTLS\r\n")
        code, text = await _reply(reader)
        if code != 220:
            raise _Failure("starttls", f"STARTTLS answered {code} {' '.join(text)}")
        await writer.start_tls(context, server_hostname=probe.host)
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        probe = replace(
            probe,
            tls_version=ssl_object.version(),
            cipher=(ssl_object.cipher() or ("",))[0],
            leaf=Leaf.from_der(der) if der else None,
            trust=Trust(True) if context.verify_mode == ssl.CERT_REQUIRED else probe.trust,
        )
        progress.finished = probe
        await _quit(reader, writer)
        return probe
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)


async def probe_mx(
    host: str,
    address: str,
    *,
    port: int = 25,
    ca_file: Path | None = None,
    timeout: float = 10.0,
    helo: str = HELO_NAME,
    source: str | None = None,
) -> SmtpProbe:
    """Probe one MX address; never raises for network trouble, it becomes ``error_kind``.

    ``helo`` names the prober in EHLO (a scan says who it is); ``source`` binds the local
    address, so an operator can scan from an address the providers know."""
    quiet_start_tls_eof()
    started = time.perf_counter()
    progress = _Progress()
    probe = SmtpProbe(host, address, port)
    try:
        probe = await asyncio.wait_for(
            _session(probe, client_context(ca_file), progress, helo, source), timeout
        )
    except ssl.SSLCertVerificationError as exc:
        probe = replace(probe, connected=True, starttls=True, trust=trust_from_error(exc))
        second = _Progress()
        with contextlib.suppress(Exception):
            try:
                unverified = await asyncio.wait_for(
                    _session(
                        SmtpProbe(host, address, port),
                        client_context(ca_file, verify=False),
                        second,
                        helo,
                        source,
                    ),
                    timeout,
                )
            except TimeoutError:
                if second.finished is None:
                    raise
                unverified = second.finished
            probe = replace(
                probe,
                leaf=unverified.leaf,
                tls_version=unverified.tls_version,
                cipher=unverified.cipher,
            )
    except TimeoutError:
        if progress.finished is not None:  # the facts are in; only QUIT went unanswered
            probe = progress.finished
        else:
            stage = "no greeting" if progress.banner is None else "no answer"
            probe = replace(probe, error_kind="timeout", error=f"{stage} within {timeout:g} s")
    except _Failure as exc:
        probe = replace(probe, error_kind=exc.kind, error=str(exc))
    except ssl.SSLError as exc:
        probe = replace(
            probe,
            connected=True,
            starttls=True,
            error_kind="handshake",
            error=f"TLS handshake failed: {exc.reason or exc}",
        )
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        kind = "handshake" if progress.starttls else "protocol" if progress.connected else "connect"
        if kind == "handshake":
            # Servers that cannot agree on a TLS version or cipher often just hang up.
            message = "TLS handshake failed: the server closed the connection (no common TLS version or cipher?)"
        else:
            message = f"connection lost: {exc or type(exc).__name__}"
        probe = replace(probe, error_kind=kind, error=message)
    except OSError as exc:
        probe = replace(probe, error_kind="connect", error=f"cannot connect: {exc.strerror or exc}")
    except Exception as exc:  # a hostile server must cost one probe, never the whole batch
        log.warning("smtp probe host=%r address=%r failed unexpectedly: %r", host, address, exc)
        probe = replace(probe, error_kind="protocol", error=f"probe failed: {exc!r:.200}")
    if not probe.connected and progress.connected:
        probe = replace(probe, connected=True, banner=progress.banner, starttls=progress.starttls)
    seconds = time.perf_counter() - started
    log.debug(
        "smtp probe host=%s address=%s outcome=%s seconds=%.3f",
        host,
        address,
        probe.error_kind or "ok",
        seconds,
    )
    return replace(probe, seconds=seconds)
