"""The root of every error mtasts raises on purpose.

Each package keeps its own base (``StsError``, ``TlsRptError``, ``ConfigError``,
``DnsLookupError``...) so callers can branch on what went wrong, and every one
of them derives from :class:`MtastsError`, so the CLI can turn any of them into
one line naming the input and the rule, and anything else is a bug to report.
"""

from __future__ import annotations


class MtastsError(Exception):
    """Something the user can act on: bad input, an unusable configuration, a failed lookup."""
