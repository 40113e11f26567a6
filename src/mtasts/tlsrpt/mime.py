"""A strict reader for report mail of the usual shape (RFC 8460 §5.3), without I/O.

Nearly every report mail is the same shape: plain ASCII headers, one level of
``multipart/report`` (or a single part), and a base64 report attachment. The email
package reads any message at all, and pays for that generality: it was nearly half of
the CPU an ingest spent reading a report mail (100 of 230 us). This reader takes only that usual shape and
gives exactly what the email package would (the same parts, file names, types, bytes
and header values, with the package's own quirks mirrored below); on anything else
(non-ASCII headers, nested multiparts, RFC 2231 parameters, quoted-printable, bare CR,
a missing close delimiter, base64 that needs the package's leniency, ...) it answers
None, and the caller reads the message with the email package. A property test holds
the two readers equal on generated mail and on the corpus of real reports.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

# A header field line as the email package's feed parser recognises one (RFC 5322 §2.2
# printable ASCII bar the colon, then a colon); we also refuse the empty name it accepts.
_FIELD = re.compile(r"[!-9;-~]+:")

Headers = dict[str, str]  # lower-case name -> first field's value, as compat32 gives it


class Leaf(NamedTuple):
    """One part that holds no other parts."""

    fields: Headers
    content_type: str  # as ``get_content_type()`` gives it
    params: dict[str, str]  # of its Content-Type
    body: bytes  # before any Content-Transfer-Encoding is undone


def read_headers(lines: list[str], eol: str) -> Headers | None:
    """Header lines (without their ``eol``) as ``Message.get`` sees them, or None if unusual.

    compat32 keeps a field's value as sent: the first line after the colon without its
    leading blanks, then each continuation line with the line break before it.
    """
    fields: Headers = {}
    name, value = "", [""]
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not name:
                return None  # a continuation with nothing to continue
            value.append(line)
            continue
        if name:
            fields.setdefault(name, eol.join(value))
        found = _FIELD.match(line)
        if found is None:
            return None  # the feed parser would end the headers here, with a defect
        name, value = line[: found.end() - 1].lower(), [line[found.end() :].lstrip(" \t")]
    if name:
        fields.setdefault(name, eol.join(value))
    return fields


def split_params(value: str) -> tuple[str, dict[str, str]] | None:
    """A structured field's main value and its parameters, or None if unusual.

    The email package's ``_parseparam`` and ``get_param``: split on semicolons outside
    double quotes, names lower-cased, values stripped and unquoted; the first parameter
    of a name wins. Backslashes, RFC 2231 names (``*``) and ``<``, which it decodes in
    ways of its own, send the message to it.
    """
    if "\\" in value or "<" in value:
        return None
    groups: list[list[str]] = []
    quoted = False  # whether the semicolon before this piece was inside quotes
    for piece in value.split(";"):
        if quoted:
            groups[-1].append(piece)
        else:
            groups.append([piece])
        quoted ^= piece.count('"') % 2 == 1  # linear: a stranger's header may be megabytes
    pieces = [";".join(group) for group in groups]
    main = pieces[0].strip()
    if "=" in main or '"' in main or "\n" in main:
        return None
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, equals, text = piece.partition("=")
        name, text = name.strip().lower(), text.strip()
        if not equals or not name or "*" in name:
            return None
        if len(text) > 1 and text[0] == text[-1] == '"':
            text = text[1:-1]
        if '"' in text or "\n" in text:
            return None
        params.setdefault(name, text)
    return main, params


def content_type(fields: Headers) -> tuple[str, dict[str, str]] | None:
    """``get_content_type()`` and the Content-Type parameters (``text/plain`` by default)."""
    value = fields.get("content-type")
    if value is None:
        return "text/plain", {}
    split = split_params(value)
    if split is None:
        return None
    main, params = split
    main = main.lower()
    return (main if main.count("/") == 1 else "text/plain"), params


class Unusual(Exception):
    """A message this reader leaves to the email package."""


def filename(fields: Headers, type_params: dict[str, str]) -> str | None:
    """``get_filename()``: Content-Disposition's filename, else Content-Type's name.

    Raises :class:`Unusual` when the disposition is not one this reader takes.
    """
    disposition = fields.get("content-disposition")
    if disposition is not None:
        split = split_params(disposition)
        if split is None:
            raise Unusual("Content-Disposition")
        if "filename" in split[1]:
            return split[1]["filename"].strip()
    name = type_params.get("name")
    return None if name is None else name.strip()


def payload(fields: Headers, body: bytes) -> bytes | None:
    """``get_payload(decode=True)`` for the encodings read here; None for the others."""
    encoding = fields.get("content-transfer-encoding", "").lower()
    if encoding == "base64":
        joined = b"".join(body.splitlines())
        if len(joined) % 4:
            return None  # the package pads it and notes a defect: let it
        try:
            return base64.b64decode(joined, validate=True)
        except binascii.Error:
            return None
    if encoding in ("quoted-printable", "x-uuencode", "uuencode", "uue", "x-uue"):
        return None
    return body


def leaf_parts(message: bytes) -> tuple[Headers, list[Leaf]] | None:
    """The top-level headers and each leaf part, in order.

    One level only: a single-part message is its own leaf; a multipart's parts must
    each be a leaf. None for anything this reader does not take.
    """
    if b"\r" in message:
        if message.count(b"\r") != message.count(b"\r\n"):
            return None  # bare CR: the feed parser's line splitting is its own
        eol = b"\r\n"
    else:
        eol = b"\n"
    end = message.find(eol + eol)
    if end < 0 or message.startswith(eol):
        return None
    head = message[:end]
    if not head.isascii():
        return None
    top = read_headers(head.decode("ascii").split(eol.decode("ascii")), eol.decode("ascii"))
    if top is None:
        return None
    body = message[end + 2 * len(eol) :]
    kind = content_type(top)
    if kind is None:
        return None
    main, params = kind
    if not main.startswith("multipart/"):
        return None if main.startswith("message/") else (top, [Leaf(top, main, params, body)])
    boundary = params.get("boundary", "").rstrip()  # get_boundary() strips the right
    if not boundary or main == "multipart/digest" or not boundary.isascii():
        return None
    parts = _split_multipart(body, eol, b"--" + boundary.encode("ascii"))
    if parts is None:
        return None
    leaves = []
    for part in parts:
        read = _leaf(part, eol)
        if read is None:
            return None
        leaves.append(read)
    return top, leaves


def _split_multipart(body: bytes, eol: bytes, delimiter: bytes) -> list[list[bytes]] | None:
    """Each body part's lines, between delimiter lines (RFC 2046 §5.1.1); None if unusual."""
    parts: list[list[bytes]] = []
    current: list[bytes] | None = None  # None in the preamble
    after_delimiter = False
    for line in body.split(eol):
        bare = line.rstrip(b" \t")  # transport padding after a delimiter
        if bare == delimiter or bare == delimiter + b"--":
            if after_delimiter:
                return None  # the feed parser folds adjacent delimiters in its own way
            if current is not None:
                parts.append(current)
            if bare != delimiter:
                return parts if parts else None  # the close delimiter: the epilogue follows
            current, after_delimiter = [], True
            continue
        after_delimiter = False
        if current is not None:
            current.append(line)
    return None  # no close delimiter


def _leaf(lines: list[bytes], eol: bytes) -> Leaf | None:
    """One body part's headers and body; its last line break belongs to the delimiter."""
    try:
        blank = lines.index(b"")
    except ValueError:
        return None  # headers with no body: the feed parser reads that its own way
    head = lines[:blank]
    if not all(line.isascii() for line in head):
        return None
    fields = read_headers([line.decode("ascii") for line in head], eol.decode("ascii"))
    if fields is None:
        return None
    kind = content_type(fields)
    if kind is None or kind[0].startswith(("multipart/", "message/")):
        return None
    return Leaf(fields, kind[0], kind[1], eol.join(lines[blank + 1 :]))


__all__ = [
    "Headers",
    "Leaf",
    "Unusual",
    "content_type",
    "filename",
    "leaf_parts",
    "payload",
    "read_headers",
]
