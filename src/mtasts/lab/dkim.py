"""DKIM keys of the lab's simulated report senders, published in the lab's DNS.

RFC 8460 §3 has report mail DKIM-signed by the reporting domain, and mtasts counts a
large sender's reports towards readiness only when that signature verifies. So the
lab plays Google and Microsoft: it makes a key per simulated sender at start-up,
publishes ``tlsrpt._domainkey.<sender>`` in its DNS and signs the mail it simulates.
The private keys live in the lab's state folder (0600), never anywhere else.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SELECTOR = "tlsrpt"
SIGNED_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"tls-report-domain",
    b"tls-report-submitter",
    b"content-type",
    b"mime-version",
]


class LabSigners:
    """One RSA key per sender domain, kept in ``folder``."""

    def __init__(self, folder: Path, domains: tuple[str, ...]) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.keys: dict[str, bytes] = {}
        for domain in domains:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            path = folder / f"{domain}.key"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(pem)
            self.keys[domain] = pem

    def records(self) -> list[tuple[str, str]]:
        """(owner, TXT value) per sender: the public keys, as DNS publishes them."""
        return [
            (f"{SELECTOR}._domainkey.{domain}", public_record(pem))
            for domain, pem in self.keys.items()
        ]

    @classmethod
    def load(cls, folder: Path) -> LabSigners:
        """The keys a running lab made (for a client of its state folder)."""
        signers = cls.__new__(cls)
        signers.folder = folder
        signers.keys = {p.stem: p.read_bytes() for p in sorted(folder.glob("*.key"))}
        return signers

    def sign(self, message: bytes, domain: str) -> bytes:
        """``message`` with a DKIM-Signature of ``domain`` prepended."""
        header = dkim.sign(
            message,
            SELECTOR.encode(),
            domain.encode(),
            self.keys[domain],
            include_headers=SIGNED_HEADERS,
        )
        return bytes(header) + message


def public_record(private_pem: bytes) -> str:
    """The ``v=DKIM1`` TXT value (RFC 6376 §3.6.1) for a private key."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
