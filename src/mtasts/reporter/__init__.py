"""The sending side's TLS-RPT reporter (RFC 8460): sessions in, daily reports out.

Intake (libtlsrpt datagrams, or Postfix's log joined with the resolver's answers)
counts TLS sessions per UTC day; ``send`` builds one report per (day, policy
domain, TLSRPT record) and delivers it to every ``rua`` URI, by DKIM-signed mail
or HTTPS POST, retrying for up to 24 hours.
"""
