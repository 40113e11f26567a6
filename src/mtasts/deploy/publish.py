"""Publish the TXT records to an authoritative server: RFC 2136 dynamic update, signed with TSIG.

The whole TXT set at ``_mta-sts`` is replaced, so exactly one ``v=STSv1``
record remains (RFC 8461 §3.1: two records mean no policy at all). After the
update the server is queried to prove it now serves what was sent.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from mtasts import sts, tlsrpt
from mtasts.errors import MtastsError
from mtasts.net.dns import Nameserver

from .records import Publication


class PublishError(MtastsError):
    """The update was refused or could not be verified; the message says which and why."""


@dataclass(frozen=True)
class PublishTarget:
    server: Nameserver
    zone: str
    key_name: str | None = None
    secret: str | None = field(default=None, repr=False)  # base64, as in BIND and Knot key files
    algorithm: str = "hmac-sha256"
    ttl: int = 300
    timeout: float = 10.0


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _txt(target: PublishTarget, name: str) -> list[list[bytes]]:
    query = dns.message.make_query(name, "TXT")
    response = dns.query.tcp(
        query, target.server.address, port=target.server.port, timeout=target.timeout
    )
    return [
        list(r.strings)
        for rrset in response.answer
        for r in rrset
        if rrset.rdtype == dns.rdatatype.TXT
    ]


def publish(publication: Publication, target: PublishTarget) -> list[str]:
    """Send the update, then read the records back; returns what was done, line by line."""
    domain = publication.domain.name
    zone = target.zone.rstrip(".") + "."
    keyring = None
    if target.key_name and target.secret:
        try:
            base64.b64decode(target.secret.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise PublishError(
                f"TSIG key {target.key_name!r}: the secret is not base64 (copy the secret"
                " value of the BIND or Knot key file, without quotes)"
            ) from None
        try:
            keyring = dns.tsigkeyring.from_text({target.key_name: target.secret})
        except (ValueError, dns.exception.DNSException) as exc:
            raise PublishError(f"TSIG key {target.key_name!r}: {exc}") from None
    update = dns.update.UpdateMessage(
        zone,
        keyring=keyring,
        keyname=dns.name.from_text(target.key_name) if keyring and target.key_name else None,
        keyalgorithm=target.algorithm,
    )
    sts_name, rpt_name = f"_mta-sts.{domain}.", f"_smtp._tls.{domain}."
    if not sts_name.endswith("." + zone) and sts_name != zone:
        raise PublishError(f"{sts_name} is not inside the zone {zone}")
    update.replace(sts_name, target.ttl, "TXT", _quoted(publication.sts_record))
    if publication.tlsrpt_record:
        update.replace(rpt_name, target.ttl, "TXT", _quoted(publication.tlsrpt_record))
    else:
        update.delete(rpt_name, "TXT")
    where = f"{target.server.address}:{target.server.port}"
    try:
        response = dns.query.tcp(
            update, target.server.address, port=target.server.port, timeout=target.timeout
        )
    except dns.tsig.PeerError as exc:
        # RFC 8945 §5.2: the server could not verify our signature (BADSIG), does not know the
        # key (BADKEY) or disagrees on the time (BADTIME); say which, not dnspython's words.
        reason = {
            "PeerBadSignature": f"BADSIG: {where} rejects key {target.key_name!r}'s secret"
            " (the secret differs from the server's)",
            "PeerBadKey": f"BADKEY: {where} does not know the key {target.key_name!r}"
            " (check its name and algorithm)",
            "PeerBadTime": f"BADTIME: {where} and this host disagree on the time (check NTP)",
        }.get(type(exc).__name__, f"{where} rejected the TSIG signature: {exc}")
        raise PublishError(reason) from None
    except (OSError, dns.exception.DNSException) as exc:
        raise PublishError(f"cannot send the update to {where}: {exc}") from None
    if response.rcode() != dns.rcode.NOERROR:
        raise PublishError(
            f"{where} refused the update of zone {zone}: {dns.rcode.to_text(response.rcode())}"
            " (is the TSIG key allowed to update this zone?)"
        )
    return [f"updated {sts_name} TXT and {rpt_name} TXT at {where}", *_verify(publication, target)]


def _verify(publication: Publication, target: PublishTarget) -> list[str]:
    domain = publication.domain.name
    try:
        record = sts.select_record(_txt(target, f"_mta-sts.{domain}."))
    except sts.StsError as exc:
        raise PublishError(
            f"after the update the server serves no usable _mta-sts record: {exc}"
        ) from None
    if record.id != publication.policy_id:
        raise PublishError(
            f"after the update the server still serves id {record.id}, not {publication.policy_id}"
        )
    lines = [f"verified: _mta-sts.{domain} id {record.id}"]
    if publication.tlsrpt_record:
        try:
            report = tlsrpt.select_record(_txt(target, f"_smtp._tls.{domain}."))
        except tlsrpt.TlsRptError as exc:
            raise PublishError(
                f"after the update the server serves no usable _smtp._tls record: {exc}"
            ) from None
        lines.append(f"verified: _smtp._tls.{domain} rua {', '.join(report.rua)}")
    return lines
