"""``make bench``: run every benchmark module and print its figures."""

from __future__ import annotations

from . import (
    check_speed,
    ingest_speed,
    lab_startup,
    parsers,
    resolver_speed,
    serve_speed,
    tlsrpt_speed,
    watch_speed,
)

if __name__ == "__main__":
    parsers.main()
    lab_startup.main()
    check_speed.main()
    resolver_speed.main()
    serve_speed.main()
    ingest_speed.main()
    watch_speed.main()
    tlsrpt_speed.main()
