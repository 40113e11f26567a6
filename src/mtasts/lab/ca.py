"""The lab's certificate authority: issues every certificate the lab serves, on demand.

A trusted CA (its PEM is written to the state folder for clients to trust) and
a rogue CA that nobody trusts. Leaf certificates share one ECDSA key and are
issued the first time a name is asked for, so a lab of 10,000 domains starts
without minting 10,000 certificates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import ssl
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtasts.files import write_atomic


class Validity(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"


_DAY = dt.timedelta(days=1)
# names, validity, trusted, TLS 1.0 only, days left (None: the usual 90-day window), generation
_Key = tuple[tuple[str, ...], Validity, bool, bool, int | None, int]


def _window(
    validity: Validity, now: dt.datetime, days_left: int | None = None
) -> tuple[dt.datetime, dt.datetime]:
    if days_left is not None and validity is Validity.VALID:
        # A certificate about to expire (lab change --certificate expires-in:N): issued
        # long ago, so its lifetime looks like a real one's.
        return now - 80 * _DAY, now + days_left * _DAY + dt.timedelta(hours=1)
    if validity is Validity.EXPIRED:
        return now - 90 * _DAY, now - _DAY
    if validity is Validity.NOT_YET_VALID:
        return now + _DAY, now + 90 * _DAY
    return now - _DAY, now + 90 * _DAY


class _Authority:
    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - 2 * _DAY)
            .not_valid_after(now + 365 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )


class LabCA:
    """Issues server certificates and ready ``ssl.SSLContext`` objects for lab hosts."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "certs"
        # Certificates of an earlier run are signed for another key: start empty.
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(mode=0o700, parents=True)
        self.trusted = _Authority("mtasts lab CA")
        self.rogue = _Authority("Untrusted Self-Made CA")
        self.ca_file = state_dir / "ca.pem"
        self.ca_file.write_bytes(self.trusted.cert.public_bytes(serialization.Encoding.PEM))
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.key_file = self.dir / "leaf.key"
        pem = self.leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(self.key_file, pem, 0o600)  # a private key: never the umask's 0644
        self._contexts: dict[_Key, ssl.SSLContext] = {}

    def issue(
        self,
        names: tuple[str, ...],
        validity: Validity,
        trusted: bool = True,
        days_left: int | None = None,
    ) -> bytes:
        """A PEM certificate for ``names`` (subjectAltName dNSName, first also CN); each call
        makes a new one (a new serial number, so a new fingerprint)."""
        authority = self.trusted if trusted else self.rogue
        start, end = _window(validity, dt.datetime.now(dt.UTC), days_left)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(authority.cert.subject)
            .public_key(self.leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
                critical=False,
            )
            .sign(authority.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def _certificate_file(self, key: _Key) -> Path:
        names, validity, trusted, _tls10, days_left, _generation = key
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        path = self.dir / f"{digest}.pem"
        if not path.exists():
            path.write_bytes(self.issue(names, validity, trusted, days_left))
        return path

    def server_context(
        self,
        names: tuple[str, ...],
        validity: Validity = Validity.VALID,
        trusted: bool = True,
        tls10_only: bool = False,
        days_left: int | None = None,
        generation: int = 0,
        *,
        fresh: bool = False,
    ) -> ssl.SSLContext:
        """A server context presenting a certificate for ``names``.

        Cached per certificate unless ``fresh``: a caller that sets an SNI
        callback needs its own context, not one other listeners share. A new
        ``generation`` issues a new certificate (a renewal) for the same names.
        """
        key: _Key = (names, validity, trusted, tls10_only, days_left, generation)
        context = None if fresh else self._contexts.get(key)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            if tls10_only:
                # OpenSSL 3 refuses TLS 1.0 at its default security level; the lab wants it.
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
                context.minimum_version = ssl.TLSVersion.TLSv1
                context.maximum_version = ssl.TLSVersion.TLSv1
            context.load_cert_chain(self._certificate_file(key), self.key_file)
            if not fresh:
                self._contexts[key] = context
        return context
