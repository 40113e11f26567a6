"""The sending side: an MTA-STS policy daemon that answers Postfix's TLS policy lookups.

It discovers, caches and applies other domains' policies as RFC 8461 section 5
says (rules in :mod:`mtasts.sts.cache`), with the checker's own DNS adapter and
policy fetcher, and speaks Postfix's socketmap and tcp_table protocols.
"""
