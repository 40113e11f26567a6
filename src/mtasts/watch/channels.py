"""Sending events: a signed JSON webhook, a Slack-compatible webhook, and mail through SMTP
submission. Each sender raises :class:`DeliveryError` with one line on any failure; the
outbox decides what happens next (a retry, with back-off).

The webhook body and its signature are documented in ``docs/watch.md``: the header
``X-Mtasts-Signature: t=UNIX,v1=HEX`` where HEX is HMAC-SHA256 over ``"UNIX." + body``
with the channel's shared secret, so a receiver can refuse replays older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from mtasts import __version__
from mtasts.errors import MtastsError

from .config import Channel
from .events import Event

WEBHOOK_VERSION = 1
SIGNATURE_HEADER = "X-Mtasts-Signature"


class DeliveryError(MtastsError):
    """A channel refused or could not take the events; the message says why in one line."""


def webhook_body(events: Sequence[Event]) -> bytes:
    document: dict[str, Any] = {
        "version": WEBHOOK_VERSION,
        "source": f"mtasts {__version__}",
        "events": [e.to_dict() for e in events],
    }
    return json.dumps(document, sort_keys=True).encode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _context(channel: Channel) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if channel.ca_file is not None:
        context.load_verify_locations(channel.ca_file)
    return context


def _post(channel: Channel, body: bytes, headers: dict[str, str]) -> None:
    request = urllib.request.Request(
        channel.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"mtasts/{__version__}",
            **headers,
        },
    )
    context = _context(channel) if channel.url.startswith("https://") else None
    try:
        with urllib.request.urlopen(request, timeout=channel.timeout, context=context) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{channel.name}: {channel.url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{channel.name}: {channel.url}: {reason}") from None
    if not 200 <= status < 300:  # only a 2xx means the receiver has it
        raise DeliveryError(f"{channel.name}: {channel.url} answered {status}")


def send_webhook(channel: Channel, events: Sequence[Event]) -> None:
    body = webhook_body(events)
    headers = {"X-Mtasts-Event": ",".join(sorted({str(e.code) for e in events}))}
    if channel.secret:
        headers[SIGNATURE_HEADER] = sign(channel.secret, body, int(time.time()))
    _post(channel, body, headers)


def _line(event: Event) -> str:
    state = "" if event.status == "changed" else f" ({event.status})"
    return (
        f"[{event.severity}] {event.domain}: {event.code}{state} {event.subject}: {event.message}"
    )


def send_slack(channel: Channel, events: Sequence[Event]) -> None:
    # Slack's incoming webhooks take {"text": ...}; mrkdwn is off, so a stranger's
    # certificate name or MX host cannot turn into a link or a mention.
    text = "\n".join(_line(e) for e in events)
    # Slack reads <...> as links, mentions and <!channel> even with mrkdwn off; its own
    # escaping (&amp; &lt; &gt;) keeps a stranger's text from paging a whole channel.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = json.dumps({"text": text, "mrkdwn": False}).encode()
    _post(channel, body, {})


def mail_for(channel: Channel, events: Sequence[Event]) -> EmailMessage:
    message = EmailMessage()
    domains = sorted({e.domain for e in events})
    if len(events) == 1:
        subject = f"mtasts: {events[0].domain}: {events[0].code} {events[0].subject}"
    else:
        subject = f"mtasts: {len(events)} events for {', '.join(domains[:3])}" + (
            " and more" if len(domains) > 3 else ""
        )
    message["Subject"] = " ".join(subject.split())[:200]
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=channel.sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    lines = []
    for event in events:
        lines.append(_line(event))
        if event.before is not None or event.after is not None:
            lines.append(f"    before: {event.before}\n    after:  {event.after}")
        if event.horizon is not None:
            lines.append(
                f"    senders may hold the previous policy until {event.horizon:%Y-%m-%d %H:%M} UTC"
            )
        lines.append(f"    at {event.at:%Y-%m-%d %H:%M:%S} UTC")
    message.set_content("\n".join(lines) + "\n")
    message.add_attachment(
        webhook_body(events), maintype="application", subtype="json", filename="events.json"
    )
    return message


def send_email(channel: Channel, events: Sequence[Event]) -> None:
    message = mail_for(channel, events)
    try:
        if channel.tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                channel.host, channel.port, timeout=channel.timeout, context=_context(channel)
            )
        else:
            client = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout)
        with client:
            client.ehlo()
            if channel.starttls and not channel.tls:
                client.starttls(
                    context=_context(channel)
                )  # RFC 3207; never send a password in clear
                client.ehlo()
            if channel.username:
                client.login(channel.username, channel.password)
            client.send_message(message)
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise DeliveryError(
            f"{channel.name}: SMTP {channel.host}:{channel.port}: {' '.join(str(exc).split())[:200]}"
        ) from None


SENDERS = {"webhook": send_webhook, "slack": send_slack, "email": send_email}
