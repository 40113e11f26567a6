"""Certificate facts and failure classes shared by the HTTPS fetcher and the SMTP probe.

Python 3.11's ``ssl`` hands over only the peer's leaf certificate, and only the
verifying handshake tells why a chain failed. We verify the chain with the
handshake (hostname checking off: RFC 8461 §4.2 matching is the judge's), keep
OpenSSL's verify code for the judge to map to an RFC 8460 §4.3 result type, and
read names and dates from the leaf.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class Leaf:
    """What the peer's certificate says, independent of whether it verified."""

    names: tuple[str, ...]
    subject_cn: str | None
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    # SHA-256 of the DER: tells a renewed certificate from the old one even when the names
    # and issuer are the same (watch's certificate-changed); None in facts saved before it.
    sha256: str | None = None

    def days_left(self, now: dt.datetime | None = None) -> int:
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).days

    @classmethod
    def from_der(cls, der: bytes) -> Leaf:
        return _leaf(der)

    @classmethod
    def _parse(cls, der: bytes) -> Leaf:
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = tuple(san.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(cns[0].value) if cns else None
        return cls(
            names,
            cn,
            cert.issuer.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            hashlib.sha256(der).hexdigest(),
        )

    @property
    def dns_ids(self) -> tuple[str, ...]:
        # RFC 6125 §6.4.4: the CN is consulted only when there is no subjectAltName.
        return self.names or ((self.subject_cn,) if self.subject_cn else ())


# One certificate serves many domains (a mail provider's MX hosts, a hosted policy
# host): it is parsed once. Leaf is frozen, so sharing it is safe.
_leaf = functools.lru_cache(maxsize=1024)(Leaf._parse)


@functools.lru_cache(maxsize=16)
def client_context(ca_file: Path | None, verify: bool = True) -> ssl.SSLContext:
    """The system trust store plus ``ca_file``; hostname checking stays ours (RFC 8461 §4.2).

    Cached: loading the trust store costs milliseconds, and a context serves any
    number of connections.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class Trust:
    """The outcome of verifying the chain; OpenSSL's ``verify_code`` says why it failed
    (the checker maps it to an RFC 8460 result type)."""

    verified: bool
    verify_code: int | None = None
    reason: str | None = None


def trust_from_error(exc: ssl.SSLCertVerificationError) -> Trust:
    return Trust(False, exc.verify_code, exc.verify_message)


class _StartTlsEofFilter(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when using ssl".

    ``StreamWriter.start_tls`` (used by both sides of STARTTLS, RFC 3207 §4) leaves the
    stream protocol believing it is not over TLS, so asyncio logs that warning each time a
    peer closes a TLS session: harmless, but one line per connection. A lab serving ten
    thousand domains wrote it until its stderr pipe filled and the whole lab froze."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("returning true from eof_received()")


_EOF_FILTER = _StartTlsEofFilter()


def quiet_start_tls_eof() -> None:
    """Install :class:`_StartTlsEofFilter` on the asyncio logger (once)."""
    logger = logging.getLogger("asyncio")
    if _EOF_FILTER not in logger.filters:
        logger.addFilter(_EOF_FILTER)
