"""``make bench``: run every benchmark module and print its figures."""

from __future__ import annotations

from . import parsers

if __name__ == "__main__":
    parsers.main()
