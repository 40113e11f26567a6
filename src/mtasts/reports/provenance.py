"""How a report arrived, and whether anyone vouches for who sent it.

A report names its own submitter (``organization-name``, ``report-id``) and anyone can
mail a rua mailbox or POST to an HTTPS rua, so a forged report can claim to be
Google's. RFC 8460 §3 requires mailed reports to be DKIM-signed by the reporting
domain; a DKIM signature that verifies against the signer's DNS is the one proof a
report carries. So each report records its channel (file, stdin, maildir, mbox, imap,
https) and, for mail, the domain of a DKIM signature that verified (dkimpy, against
DNS). An HTTPS POST carries no such proof. Readiness counts a large sender only when
its report is authenticated, or came through a channel the admin marked trusted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from mtasts.net.dns import DnsLookupError, Nameserver, Resolver
from mtasts.sts.domain import normalise_host

log = logging.getLogger("mtasts.reports.provenance")
# dkimpy logs every failed signature at ERROR: a stranger's bad signature is a result
# (recorded with the report), not an error of ours.
_DKIMPY = logging.getLogger("mtasts.reports.provenance.dkimpy")
_DKIMPY.addHandler(logging.NullHandler())
_DKIMPY.propagate = False


class Channel(StrEnum):
    FILE = "file"
    STDIN = "stdin"
    MAILDIR = "maildir"
    MBOX = "mbox"
    IMAP = "imap"
    HTTPS = "https"


@dataclass(frozen=True, slots=True)
class Provenance:
    channel: Channel
    dkim_domain: str | None = None  # the d= of a signature that verified
    dkim_result: str = "none"  # pass | fail | temperror | none (unsigned, or not mail)


TxtLookup = Callable[[str], bytes | None]


@dataclass
class DkimVerifier:
    """Verifies report mail's DKIM signatures against DNS, caching each key it fetched.

    Keys are asked through mtasts's own stub resolver (the nameservers given, else the
    system's), one question at a time: ingest is not asynchronous, and a sender signs
    all its reports with a handful of keys.
    """

    nameservers: tuple[Nameserver, ...] = ()
    timeout: float = 5.0
    _keys: dict[str, bytes | None] = field(default_factory=dict)
    retry_after: float = 300.0  # seconds before a key whose lookup failed is asked again
    _failed: dict[str, tuple[float, str]] = field(default_factory=dict)

    def lookup(self, name: str) -> bytes | None:
        import dkim  # dkimpy loads dnspython's resolver: only when a signature is checked

        name = normalise_host(name)
        failed = self._failed.get(name)
        if failed is not None and time.monotonic() - failed[0] < self.retry_after:
            # An unreachable DNS must not cost a timeout per message; a watcher asks again later.
            raise dkim.DnsTimeoutError(failed[1])
        if name not in self._keys:
            try:
                self._keys[name] = asyncio.run(self._ask(name))
            except dkim.DnsTimeoutError as exc:
                self._failed[name] = (time.monotonic(), str(exc))
                raise
            self._failed.pop(name, None)
        return self._keys[name]

    async def _ask(self, name: str) -> bytes | None:
        import dkim

        try:
            records = await Resolver(self.nameservers, timeout=self.timeout).txt(name)
        except DnsLookupError as exc:
            raise dkim.DnsTimeoutError(str(exc)) from None
        return b"".join(records[0]) if records else None

    def verify(self, message: bytes) -> tuple[str, str | None]:
        """(result, signing domain) for the first signature that verifies."""
        return verify_dkim(message, self.lookup)


_SIGNATURE = re.compile(rb"^dkim-signature:", re.IGNORECASE | re.MULTILINE)


def verify_dkim(message: bytes, lookup: TxtLookup) -> tuple[str, str | None]:
    """``pass`` and the d= domain when a signature verifies; else fail, temperror or none."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    count = len(_SIGNATURE.findall(head))
    if not count:
        return "none", None
    import dkim  # only for signed mail: unsigned ingest never loads dkimpy

    unreachable = False

    def dnsfunc(name: bytes, timeout: float = 5.0) -> bytes | None:
        nonlocal unreachable
        try:
            return lookup(name.decode("ascii", "replace"))
        except dkim.DnsTimeoutError:
            unreachable = True  # dkimpy turns this into a plain False: remember why
            raise

    for index in range(min(count, 5)):  # a few signatures at most; each may cost a lookup
        checker = dkim.DKIM(message, logger=_DKIMPY, minkey=1024)
        try:
            if checker.verify(idx=index, dnsfunc=dnsfunc):
                domain = (checker.domain or b"").decode("ascii", "replace").lower().rstrip(".")
                return "pass", domain or None
        except Exception as exc:  # dkimpy raises many kinds on hostile input; none may escape
            log.debug("dkim signature %d unusable: %r", index, exc)
    return ("temperror" if unreachable else "fail"), None


def claimed_domain(submitter: str | None, contact: str, organization: str) -> str:
    """The domain a report says it is from: the mail's TLS-Report-Submitter, else contact-info's.

    Only used for reports from a trusted channel; elsewhere the DKIM domain counts.
    """
    for value in (submitter or "", contact.rsplit("@", 1)[-1] if "@" in contact else ""):
        value = normalise_host(value.strip())
        if value and " " not in value:
            return value
    return organization.strip().lower()


def is_sender(domain: str | None, large: str) -> bool:
    """``domain`` is ``large`` or one of its subdomains (google.com's mail comes from google.com)."""
    if not domain:
        return False
    large = normalise_host(large)
    return domain == large or domain.endswith("." + large)


__all__ = [
    "Channel",
    "DkimVerifier",
    "Provenance",
    "claimed_domain",
    "is_sender",
    "verify_dkim",
]
