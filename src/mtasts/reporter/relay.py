"""One SMTP session with the configured relay for a whole ``tlsrpt send`` run.

A sender reports to every domain it delivered to: thousands of report mails a day, each to
the same submission server. A connection, STARTTLS handshake and AUTH per mail cost the
relay more than the mail does, and some relays throttle or block a client that logs in
that often. So the session opens with the first mail, carries the rest, and is closed when
the run ends; a session the relay dropped in between (its idle timeout, or a cap on mails
per connection) is opened again once for the mail at hand. When the relay cannot be
reached or refuses the login, the rest of the run is not tried against it: each report
keeps its own retry schedule, and a wrong password costs one failed login, not thousands.
"""

from __future__ import annotations

import smtplib
import ssl
from types import TracebackType

from mtasts.errors import MtastsError

from .config import TlsrptConfig

# A relay that drops the session between mails shows it as one of these on the next
# command; a refusal of one mail (SMTPRecipientsRefused, SMTPDataError, ...) leaves it open.
_DROPPED = (smtplib.SMTPServerDisconnected, ConnectionError, ssl.SSLError, TimeoutError)


class RelayError(MtastsError):
    """The relay did not take one mail; the message says why, in one line. ``refused``: it
    refused the recipient, the one failure that may be the endpoint's rather than ours."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def _reply(code: int, text: bytes | str) -> str:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return _line(f"{code} {said}")


def tls_context(config: TlsrptConfig) -> ssl.SSLContext:
    """The trust for the relay and for https rua endpoints: the system's, or ``ca_file``."""
    context = ssl.create_default_context()
    if config.ca_file is not None:
        context.load_verify_locations(config.ca_file)
    return context


class Relay:
    """The session; use as a context manager around the run's deliveries."""

    def __init__(self, config: TlsrptConfig) -> None:
        self.config = config
        self.connections = 0  # sessions opened this run
        self._client: smtplib.SMTP | None = None
        self._sent_on_client = 0
        self._broken: str | None = None  # why the relay could not be used this run

    @property
    def broken(self) -> str | None:
        """Why the relay could not be used in this run (unreachable, login refused), if so."""
        return self._broken

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()

    def send(self, sender: str, address: str, message: bytes) -> None:
        """Hand one mail to the relay; raise :class:`RelayError` when it did not take it."""
        if self._broken is not None:
            raise RelayError(f"{self._broken} (not tried again in this run)")
        reused = self._client is not None and self._sent_on_client > 0
        try:
            self._send(sender, address, message)
        except _DROPPED as exc:
            self._drop()
            if not reused:
                raise RelayError(f"relay {self.config.relay}: {_line(exc)}") from None
            # Dropped between mails: a fresh session, once, for this mail.
            try:
                self._send(sender, address, message)
            except _DROPPED as again:
                self._drop()
                raise RelayError(f"relay {self.config.relay}: {_line(again)}") from None

    def _send(self, sender: str, address: str, message: bytes) -> None:
        client = self._client or self._open()
        try:
            refused = client.sendmail(sender, [address], message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(address, (0, b"refused"))
            raise RelayError(
                f"relay {self.config.relay} refused {address}: {_reply(code, text)}", refused=True
            ) from None
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            said = _reply(exc.smtp_code, exc.smtp_error)
            raise RelayError(f"relay {self.config.relay} refused the mail: {said}") from None
        except smtplib.SMTPServerDisconnected:
            raise  # the session is gone: send() decides whether to open another
        except smtplib.SMTPException as exc:  # a relay's odd answer (EHLO refused, ...)
            raise RelayError(f"relay {self.config.relay}: {_line(exc)}") from None
        if refused:  # only one recipient, so only a refusal above; kept for a relay's oddity
            raise RelayError(
                f"relay {self.config.relay} refused {address}: {_line(refused)}", refused=True
            )
        self._sent_on_client += 1

    def _open(self) -> smtplib.SMTP:
        config = self.config
        host, _, port = config.relay.rpartition(":")
        client: smtplib.SMTP | None = None
        try:
            client = (
                smtplib.SMTP_SSL(
                    host, int(port), timeout=config.timeout, context=tls_context(config)
                )
                if config.relay_tls
                else smtplib.SMTP(host, int(port), timeout=config.timeout)
            )
            self.connections += 1
            client.ehlo()
            if config.relay_starttls and not config.relay_tls:
                client.starttls(context=tls_context(config))  # RFC 3207: no password in clear
                client.ehlo()
            if config.relay_username:
                client.login(config.relay_username, config.relay_password)
        except (smtplib.SMTPException, OSError) as exc:
            if client is not None:
                client.close()
            said = _line(exc)
            if isinstance(exc, smtplib.SMTPResponseException):
                said = _reply(exc.smtp_code, exc.smtp_error)
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                said = f"login as {config.relay_username} refused: {said}"
            self._broken = f"relay {config.relay}: {said}"
            raise RelayError(self._broken) from None
        self._client, self._sent_on_client = client, 0
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
