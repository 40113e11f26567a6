"""Text written by strangers (reports, DNS answers, certificates), made safe to show.

Shared by the terminal output and the dashboard: no control characters on a terminal
(security review #21), no formula in a spreadsheet cell.
"""

from __future__ import annotations

import re

# C0 and C1 controls but tab and newline: ESC starts every terminal escape sequence (a
# cleared screen, a forged hyperlink).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: object) -> str:
    """Text from a stranger, safe to print: no control characters."""
    return _CONTROL.sub("", str(value))


def csv_cell(value: object) -> object:
    """A cell a spreadsheet will not run: a leading = + - @ tab or CR is quoted with '."""
    if not isinstance(value, str):
        return value
    value = plain(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
