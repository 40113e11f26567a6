"""DKIM for report mail: RFC 8460 §3 makes a report mail carry a valid signature of the
reporting domain (no ``l=``), and asks for ``s=tlsrpt`` in the key record."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mtasts.errors import MtastsError

# The headers §5.3 names (TLS-Report-Domain, TLS-Report-Submitter SHOULD be signed) and
# those a receiver shows; Content-Type too, so the report part cannot be swapped.
SIGNED_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"tls-report-domain",
    b"tls-report-submitter",
    b"tls-required",
]


class DkimKeyError(MtastsError):
    """The signing key cannot be read or used."""


def create_key(path: Path, bits: int = 2048) -> bytes:
    """A new RSA key in ``path`` (0600, never overwritten); returns its PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise DkimKeyError(f"{path} exists; a key is never overwritten (remove it first)") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return pem


def read_key(path: Path) -> bytes:
    try:
        pem = path.read_bytes()
        serialization.load_pem_private_key(pem, password=None)
    except OSError as exc:
        raise DkimKeyError(f"DKIM key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"DKIM key {path}: not an unencrypted PEM private key ({exc})") from None
    return pem


def public_record(private_pem: bytes) -> str:
    """The TXT value (RFC 6376 §3.6.1) with ``s=tlsrpt`` (RFC 8460 §3): this key signs
    TLS reports and nothing else."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; s=tlsrpt; p={base64.b64encode(der).decode()}"


def sign(message: bytes, *, domain: str, selector: str, private_pem: bytes) -> bytes:
    """``message`` with its DKIM-Signature prepended (relaxed/relaxed, no l=)."""
    try:
        header = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            private_pem,
            include_headers=SIGNED_HEADERS,
            canonicalize=(b"relaxed", b"relaxed"),
        )
    except dkim.DKIMException as exc:
        raise DkimKeyError(f"DKIM signing as {domain} failed: {exc}") from None
    return bytes(header) + message
