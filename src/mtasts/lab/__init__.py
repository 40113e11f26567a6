"""A simulated mail internet on loopback, for the demo, the tests and the benchmarks.

One asyncio process runs an authoritative DNS server, HTTPS policy hosts, SMTP
MX hosts with STARTTLS and a STARTTLS-stripping attacker, each on its own
address in 127.0.0.0/8, with certificates from a lab CA issued on demand. A
scenario file (TOML) describes the domains and the faults to inject; every
failure the seed article describes can be reproduced on purpose.
Nothing here rewrites the host's resolver or trust store.
"""
