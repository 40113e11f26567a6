"""mtasts: publish, host, prove, monitor and enforce MTA-STS and TLS-RPT.

The pure standards code lives in :mod:`mtasts.sts` (RFC 8461) and
:mod:`mtasts.tlsrpt` (RFC 8460); everything that touches a socket lives elsewhere.
"""

__version__ = "0.1.0"
