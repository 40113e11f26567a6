"""The readiness verdict: may this domain move to ``enforce`` on what its reports show?"""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """One verdict for the reports, the enforce gate, ``status`` and the CLI.

    NOT READY wins whenever enforce would have deferred any session in the window;
    UNKNOWN only when none would have been and the data is too thin to say READY.
    """

    READY = "READY"
    NOT_READY = "NOT READY"
    UNKNOWN = "UNKNOWN"
