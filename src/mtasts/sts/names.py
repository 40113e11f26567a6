"""Where a policy lives (RFC 8461 §3.3), shared by the fetcher, the servers and the lab."""

from __future__ import annotations

# RFC 8461 §3.3: the one place a policy lives on its host.
WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"
# RFC 8461 §3.3 suggests senders cap the body; 64 KiB is what the peers use.
MAX_POLICY_SIZE = 64 * 1024


def policy_host(domain: str) -> str:
    """RFC 8461 §3.3: the policy of ``domain`` is served by ``mta-sts.<domain>``."""
    return f"mta-sts.{domain}"
