"""Reports from an IMAP mailbox: read each message, store its reports, then move it.

A message moves to the ``Processed`` folder (or ``Failed`` when a report in it
was quarantined) only after its reports are committed, so a crash or a lost
connection leaves it in place to be read again, and reading it again stores
nothing twice. Unrelated mail stays where it is.
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .ingest import IngestResult, ingest_bytes
from .store import Outcome, ReportStore


class ImapError(Exception):
    """The mailbox cannot be used; the message names the server and the reason."""


@dataclass(frozen=True)
class ImapSource:
    host: str
    port: int
    user: str
    folder: str
    tls: bool
    password: str
    processed: str = "Processed"
    failed: str = "Failed"
    ca_file: Path | None = None

    @classmethod
    def parse(cls, url: str, password: str, ca_file: Path | None = None) -> ImapSource:
        """``imaps://user@host[:port]/FOLDER`` (or ``imap://`` for a local server without TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise ImapError(f"{url!r}: expected imaps://user@host[:port]/FOLDER")
        tls = parts.scheme == "imaps"
        folder = unquote(parts.path.lstrip("/")) or "INBOX"
        return cls(parts.hostname, parts.port or (993 if tls else 143), unquote(parts.username), folder, tls,
                   password, ca_file=ca_file)  # fmt: skip


def _connect(source: ImapSource) -> imaplib.IMAP4:
    try:
        if source.tls:
            context = ssl.create_default_context(
                cafile=str(source.ca_file) if source.ca_file else None
            )
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                source.host, source.port, ssl_context=context, timeout=30
            )
        else:
            client = imaplib.IMAP4(source.host, source.port, timeout=30)
        client.login(source.user, source.password)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"{source.host}:{source.port}: {exc}") from None
    for folder in (source.processed, source.failed):
        client.create(folder)  # NO when it exists already: fine
    status, _ = client.select(source.folder)
    if status != "OK":
        raise ImapError(f"{source.host}: cannot open folder {source.folder!r}")
    return client


def _move(client: imaplib.IMAP4, uid: bytes, folder: str) -> None:
    if "MOVE" in client.capabilities:  # RFC 6851: atomic, so a crash never leaves two copies
        client.uid("MOVE", uid.decode(), folder)
        return
    client.uid("COPY", uid.decode(), folder)
    client.uid("STORE", uid.decode(), "+FLAGS", "(\\Deleted)")
    client.expunge()


def ingest_imap(store: ReportStore, source: ImapSource, result: IngestResult) -> None:
    client = _connect(source)
    try:
        status, data = client.uid("SEARCH", "ALL")
        uids = data[0].split() if status == "OK" and data and data[0] else []
        for uid in uids:
            status, fetched = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            message = next((part[1] for part in fetched if isinstance(part, tuple)), None)
            if status != "OK" or not isinstance(message, bytes):
                continue
            before = result.counts[Outcome.QUARANTINED]
            if not ingest_bytes(
                store, message, f"imap://{source.host}/{source.folder}/{uid.decode()}", result
            ):
                continue
            _move(
                client,
                uid,
                source.failed if result.counts[Outcome.QUARANTINED] > before else source.processed,
            )
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def watch(
    store: ReportStore, source: ImapSource, interval: float, rounds: int | None = None
) -> IngestResult:
    """Keep reading the mailbox every ``interval`` seconds; a lost connection is retried next round."""
    result = IngestResult()
    done = 0
    while rounds is None or done < rounds:
        try:
            ingest_imap(store, source, result)
        except ImapError as exc:
            result.problems.append(f"imap: {exc}")
        done += 1
        time.sleep(interval)
    return result
