"""Host-name syntax shared by the policy and the matchers (RFC 5321 §4.1.2 ``Domain``)."""

from __future__ import annotations

import re

# RFC 5321 §4.1.2: sub-domain = Let-dig [Ldh-str]; RFC 1035 §2.3.4 caps label and name length.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_MAX_NAME = 253


def domain_problem(name: str) -> str | None:
    """Say why ``name`` is not an RFC 5321 ``Domain`` of A-labels, or None if it is."""
    if not name:
        return "is empty"
    if name.endswith("."):
        return "ends with a dot (write the name without the root dot)"
    if len(name) > _MAX_NAME:
        return f"is {len(name)} characters long (at most {_MAX_NAME})"
    for label in name.split("."):
        if not label:
            return "has an empty label (two dots in a row or a leading dot)"
        if not label.isascii():
            return "contains non-ASCII characters (use the A-label form)"
        if len(label) > 63:
            return f"has the label {label[:20]!r}... longer than 63 characters"
        if not _LABEL.match(label):
            return f"has the label {label!r}: only letters, digits and inner hyphens are allowed"
    return None


def to_a_label(name: str) -> str | None:
    """The IDNA A-label form of a U-label name, or None when it has none."""
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def as_asked(name: str) -> str:
    """A domain as DNS and HTTPS ask for it: lower case, no root dot, and the A-label of a
    U-label name (IDNA, RFC 5891), so bücher.example is asked as xn--bcher-kva.example."""
    name = normalise_host(name.strip())
    return (to_a_label(name) or name) if not name.isascii() else name


def normalise_host(name: str) -> str:
    """Lower-case and drop a trailing root dot: RFC 8461 §4.1 compares names case-insensitively."""
    return name.rstrip(".").lower() if name != "." else ""
