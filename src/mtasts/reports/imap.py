"""Reports from an IMAP mailbox: read the messages, store their reports, then move them.

A message moves to the ``Processed`` folder (or ``Failed`` when a report in it
was quarantined) only after its reports are committed, so a crash or a lost
connection leaves it in place to be read again, and reading it again stores
nothing twice. Unrelated mail stays where it is.
"""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import re
import select
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import SQLAlchemyError

from mtasts.errors import MtastsError
from mtasts.tlsrpt.parse import DEFAULT_MAX_SIZE

from .ingest import DEFAULT_BATCH, AfterCommit, Batch, IngestResult, max_message
from .provenance import Channel, DkimVerifier
from .store import ReportStore, store_error

_FETCH_CHUNK = 20  # messages per FETCH: few round trips, and at most 20 messages in memory
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapError(MtastsError):
    """The mailbox cannot be used; the message names the server and the reason."""


@dataclass(frozen=True)
class ImapSource:
    host: str
    port: int
    user: str
    folder: str
    tls: bool
    password: str = field(repr=False)  # never in a traceback or a debug line
    processed: str = "Processed"
    failed: str = "Failed"
    ca_file: Path | None = None
    # An OAuth 2.0 access token, read afresh at each login (tokens live an hour or so and a
    # tool such as oama or a cron job keeps the file current): Gmail and Microsoft 365
    # mailboxes take no passwords.
    token_file: Path | None = None

    def login(self, client: imaplib.IMAP4) -> None:
        if self.token_file is None:
            client.login(self.user, self.password)
            return
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise ImapError(
                f"cannot read the OAuth token file {self.token_file}: {exc.strerror}"
            ) from None
        sent = False

        def respond(_challenge: bytes) -> bytes:
            # SASL XOAUTH2: the credentials once; an error challenge gets an empty answer so
            # the server ends the exchange with NO and its reason.
            nonlocal sent
            if sent:
                return b""
            sent = True
            return f"user={self.user}\x01auth=Bearer {token}\x01\x01".encode()

        client.authenticate("XOAUTH2", respond)

    @classmethod
    def parse(cls, url: str, password: str, ca_file: Path | None = None) -> ImapSource:
        """``imaps://user@host[:port]/FOLDER`` (or ``imap://`` for a local server without TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise ImapError(f"{url!r}: expected imaps://user@host[:port]/FOLDER")
        tls = parts.scheme == "imaps"
        folder = unquote(parts.path.lstrip("/")) or "INBOX"
        return cls(
            parts.hostname,
            parts.port or (993 if tls else 143),
            unquote(parts.username),
            folder,
            tls,
            password,
            ca_file=ca_file,
        )


def _connect(source: ImapSource) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    if source.ca_file:  # in addition to the system's CAs
        context.load_verify_locations(cafile=str(source.ca_file))
    try:
        if source.tls:
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                source.host, source.port, ssl_context=context, timeout=30
            )
        else:
            client = imaplib.IMAP4(source.host, source.port, timeout=30)
            _secure(client, source, context)
        source.login(client)
        # imaplib keeps the greeting's list, and servers announce MOVE, UIDPLUS and more only
        # once logged in (RFC 3501 §6.2.3): ask again, or MOVE is never used.
        _, found = client.capability()
        client.capabilities = tuple(found[-1].decode().upper().split())
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"{source.host}:{source.port}: {exc}") from None
    for folder in (source.processed, source.failed):
        client.create(folder)  # NO when it exists already: fine
    status, _ = client.select(source.folder)
    if status != "OK":
        raise ImapError(f"{source.host}: cannot open folder {source.folder!r}")
    return client


def _secure(client: imaplib.IMAP4, source: ImapSource, context: ssl.SSLContext) -> None:
    """imap:// upgrades with STARTTLS (RFC 3501 §6.2.1) whenever the server offers it, verifying
    the certificate; without it the password may cross only the loopback interface."""
    if "STARTTLS" in client.capabilities:
        client.starttls(context)
        return
    peer = client.sock.getpeername()[0]
    if not ipaddress.ip_address(peer.split("%")[0]).is_loopback:
        client.shutdown()
        raise ImapError(
            f"{source.host}:{source.port} offers no STARTTLS: the password would cross the network"
            " in clear; use imaps:// (or a server on this machine)"
        )


def _move(client: imaplib.IMAP4, uids: list[bytes], folder: str) -> None:
    if not uids:
        return
    uid_set = b",".join(uids).decode()
    if "MOVE" in client.capabilities:  # RFC 6851: atomic, so a crash never leaves two copies
        client.uid("MOVE", uid_set, folder)
        return
    client.uid("COPY", uid_set, folder)
    client.uid("STORE", uid_set, "+FLAGS", "(\\Deleted)")
    if "UIDPLUS" in client.capabilities:  # RFC 4315: expunge only these, not what the user deleted
        client.uid("EXPUNGE", uid_set)
    else:
        client.expunge()


_UID = re.compile(rb"UID (\d+)")


def _fetch(client: imaplib.IMAP4, uids: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(uid, message) for a set of UIDs, in one round trip; BODY.PEEK leaves them unread."""
    status, fetched = client.uid("FETCH", b",".join(uids).decode(), "(UID BODY.PEEK[])")
    if status != "OK":
        return
    for n, part in enumerate(fetched):
        if not isinstance(part, tuple):
            continue
        header, message = part
        # The server may put UID before or after the literal (RFC 3501 §7.4.2).
        trailer = fetched[n + 1] if n + 1 < len(fetched) else b""
        found = _UID.search(header) or (
            _UID.search(trailer) if isinstance(trailer, bytes) else None
        )
        if found and isinstance(message, bytes):
            yield found.group(1), message


def _sizes(client: imaplib.IMAP4, uids: list[bytes]) -> dict[bytes, int]:
    """RFC822.SIZE per UID, asked before any message is fetched (security review #29)."""
    status, fetched = client.uid("FETCH", b",".join(uids).decode(), "(UID RFC822.SIZE)")
    sizes: dict[bytes, int] = {}
    for line in fetched if status == "OK" else []:
        text = line[0] if isinstance(line, tuple) else line
        if isinstance(text, bytes) and (uid := _UID.search(text)) and (size := _SIZE.search(text)):
            sizes[uid.group(1)] = int(size.group(1))
    return sizes


def _round(
    client: imaplib.IMAP4, source: ImapSource, batch: Batch, unrelated: set[bytes] | None = None
) -> None:
    """Store every report in the folder; a message moves once its reports are committed.

    ``unrelated`` collects the UIDs of mail that holds no report, which stays in the folder,
    so a watcher does not fetch and parse it again every round (UIDs are stable for one
    connection's UIDVALIDITY, RFC 3501 §2.3.1.1; the watcher forgets them on reconnecting).
    """
    skip = unrelated if unrelated is not None else set()
    committed: dict[str, list[bytes]] = {source.processed: [], source.failed: []}

    def after_commit(uid: bytes) -> AfterCommit:
        def then(quarantined: bool) -> None:
            committed[source.failed if quarantined else source.processed].append(uid)

        return then

    def move_committed() -> None:
        for folder, uids in committed.items():
            _move(client, uids, folder)
            uids.clear()

    status, data = client.uid("SEARCH", "ALL")
    found = data[0].split() if status == "OK" and data and data[0] else []
    uids = [uid for uid in found if uid not in skip]
    limit = max_message(batch.max_size)
    for first in range(0, len(uids), _FETCH_CHUNK):
        chunk = uids[first : first + _FETCH_CHUNK]
        sizes = _sizes(client, chunk)
        wanted = [uid for uid in chunk if sizes.get(uid, 0) <= limit]
        for uid in chunk:
            if sizes.get(uid, 0) > limit:  # never fetched: moved aside, said once
                batch.result.counts["unreadable"] += 1
                batch.result.problems.append(
                    f"unreadable: imap://{source.host}/{source.folder}/{uid.decode()}: a"
                    f" {sizes[uid]:,}-byte message, over the {limit:,}-byte limit; moved to {source.failed}"
                )
                committed[source.failed].append(uid)
        for uid, message in _fetch(client, wanted) if wanted else ():
            where = f"imap://{source.host}/{source.folder}/{uid.decode()}"
            if not batch.add(message, where, after_commit(uid), Channel.IMAP):
                skip.add(uid)  # unrelated mail stays put
        move_committed()
    batch.flush()
    move_committed()


def ingest_imap(batch: Batch, source: ImapSource) -> None:
    client = _connect(source)
    try:
        _round(client, source, batch)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"{source.host}:{source.port}: {exc}") from None
    finally:
        _logout(client)


def _logout(client: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error):
        client.logout()


def _idle(client: imaplib.IMAP4, seconds: float) -> bool:
    """Wait in IDLE (RFC 2177) until the server announces mail or ``seconds`` pass.

    False when the server has no IDLE, so the caller sleeps instead. imaplib
    before Python 3.14 has no IDLE, hence the raw protocol lines. The wait uses
    select() rather than a socket timeout, which would leave imaplib's buffered
    reader unusable; a line already buffered is at worst noticed one wait late.
    """
    if "IDLE" not in client.capabilities:
        return False
    tag: bytes = client._new_tag()
    client.send(tag + b" IDLE\r\n")
    if not client.readline().startswith(b"+"):
        raise ImapError("the server refused IDLE")
    sock = client.socket()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not pending and not select.select([sock], [], [], left)[0]:
            break
        line = client.readline()
        if not line:
            raise ImapError("the server closed the connection")
        if line.rstrip().endswith((b"EXISTS", b"RECENT")):
            break
    client.send(b"DONE\r\n")
    while not (line := client.readline()).startswith(tag):
        if not line:
            raise ImapError("the server closed the connection")
    return True


def watch(
    store: ReportStore,
    source: ImapSource,
    interval: float,
    on_round: Callable[[IngestResult], None] = lambda _result: None,
    batch_size: int = DEFAULT_BATCH,
    max_size: int = DEFAULT_MAX_SIZE,
    verifier: DkimVerifier | None = None,
) -> None:
    """Keep reading the mailbox, woken by IDLE when the server has it, else every ``interval``.

    One connection is kept open; a lost one is reported to ``on_round`` (which
    gets each round's counts) and opened again after ``interval``.
    """
    client: imaplib.IMAP4 | None = None
    unrelated: set[bytes] = set()
    while True:
        result = IngestResult()
        try:
            if client is None:
                client, unrelated = _connect(source), set()
            with Batch(store, result, batch_size, max_size, verifier=verifier) as batch:
                _round(client, source, batch, unrelated)
            on_round(result)
            if not _idle(client, interval):
                time.sleep(interval)
        except SQLAlchemyError as exc:
            # The store is down or full: nothing moved, so the next round reads it all again.
            result.problems.append(f"error: {store_error(exc)}")
            on_round(result)
            time.sleep(interval)
            continue
        except (ImapError, OSError, imaplib.IMAP4.error) as exc:
            result.problems.append(f"error: imap {source.host}:{source.port}: {exc}")
            on_round(result)
            if client is not None:
                _logout(client)
                client = None
            time.sleep(interval)
