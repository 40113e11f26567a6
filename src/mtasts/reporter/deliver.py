"""Delivering one report to one ``rua`` URI: DKIM-signed mail (RFC 8460 §5.3) through a relay
or sendmail, or an HTTPS POST (§5.4) that counts only when answered 2xx."""

from __future__ import annotations

import hashlib
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.utils import formatdate

from mtasts import __version__
from mtasts.errors import MtastsError
from mtasts.net.dns import DnsLookupError, Resolver
from mtasts.tlsrpt import NoTlsRptRecordError, TlsRptRecordError, parse_record, select_record
from mtasts.tlsrpt.build import report_mail
from mtasts.tlsrpt.model import Report

from .config import TlsrptConfig
from .dkim import read_key, sign
from .relay import Relay, RelayError, tls_context


class DeliveryError(MtastsError):
    """One URI did not take the report; the message says why, in one line. ``ours`` when the
    fault was on our side of the endpoint (the relay, sendmail), which must not count
    towards the endpoint's suppression."""

    def __init__(self, message: str, *, ours: bool = False) -> None:
        super().__init__(message)
        self.ours = ours


def _line(text: object) -> str:
    return " ".join(str(text).split())[:300]


@dataclass(frozen=True, slots=True)
class Rua:
    """Where a domain's report goes now: its URIs, why there are none, and whether DNS could
    say (a failed lookup is retried later; a missing record means the domain takes none)."""

    uris: tuple[str, ...]
    note: str = ""
    dns_failed: bool = False


async def rua_for(resolver: Resolver, domain: str, fallback: str) -> Rua:
    """The URIs to send ``domain``'s report to, looked up now (§3).

    No record (or several) now means the domain takes no reports: nothing is sent. When
    DNS cannot answer, the record the MTA saw when it reported the session is used.
    """
    try:
        records = await resolver.txt(f"_smtp._tls.{domain}")
    except DnsLookupError as exc:
        if fallback:
            try:
                return Rua(
                    parse_record(fallback).rua, f"DNS failed ({exc}); used the record the MTA saw"
                )
            except TlsRptRecordError:
                pass
        return Rua((), f"DNS failed: {exc}", dns_failed=True)
    try:
        return Rua(select_record(records).rua)
    except NoTlsRptRecordError:
        return Rua((), "the domain publishes no TLSRPT record: it takes no reports")
    except TlsRptRecordError as exc:
        return Rua((), f"the TLSRPT record is unusable: {exc}")


def compose(report: Report, config: TlsrptConfig, policy_domain: str, address: str) -> bytes:
    """The signed §5.3 message for one mailto recipient."""
    digest = hashlib.sha256(f"{report.report_id} {address}".encode()).hexdigest()[:20]
    message = report_mail(
        report,
        policy_domain=policy_domain,
        submitter=config.submitter_name,
        sender=config.from_address,
        recipients=[address],
        date_header=formatdate(usegmt=True),
        message_id=f"<{digest}.tlsrpt@{config.submitter_name}>",
    )
    if config.dkim_key is None:
        return message
    return sign(
        message,
        domain=config.dkim_domain or config.submitter_name,
        selector=config.dkim_selector,
        private_pem=read_key(config.dkim_key),
    )


def send_mail(
    config: TlsrptConfig, address: str, message: bytes, relay: Relay | None = None
) -> None:
    """Through sendmail, or through ``relay`` (the run's session; one of its own without)."""
    if config.sendmail:
        try:
            done = subprocess.run(
                [config.sendmail, "-i", "-f", config.from_address, "--", address],
                input=message,
                capture_output=True,
                timeout=config.timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(f"sendmail {config.sendmail}: {_line(exc)}", ours=True) from None
        if done.returncode:
            said = _line(done.stderr.decode("utf-8", "replace")) or f"exit {done.returncode}"
            raise DeliveryError(f"sendmail {config.sendmail}: {said}", ours=True)
        return
    if not config.relay:
        raise DeliveryError(
            "no relay or sendmail is configured in [tlsrpt] for mailto: URIs", ours=True
        )
    try:
        if relay is not None:
            relay.send(config.from_address, address, message)
            return
        with Relay(config) as own:
            own.send(config.from_address, address, message)
    except RelayError as exc:
        raise DeliveryError(str(exc), ours=not exc.refused) from None


def post_https(config: TlsrptConfig, uri: str, document: bytes) -> None:
    """§5.4: POST ``application/tlsrpt+gzip``; only a 2xx answer delivers."""
    request = urllib.request.Request(
        uri,
        data=document,
        method="POST",
        headers={
            "Content-Type": "application/tlsrpt+gzip",
            "User-Agent": f"mtasts/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(
            request, timeout=config.timeout, context=tls_context(config)
        ) as r:
            status = r.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{uri} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeliveryError(f"{uri}: {_line(getattr(exc, 'reason', exc))}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"{uri} answered {status}")


def deliver(
    config: TlsrptConfig,
    uri: str,
    report: Report,
    policy_domain: str,
    document: bytes,
    relay: Relay | None = None,
) -> None:
    """Send to one URI; raise :class:`DeliveryError`."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "mailto":
        address = uri.split(":", 1)[1].split("?", 1)[0]
        send_mail(config, address, compose(report, config, policy_domain, address), relay)
    elif scheme == "https":
        post_https(config, uri, document)
    else:
        raise DeliveryError(f"{uri}: only mailto: and https: are RFC 8460 rua schemes")
