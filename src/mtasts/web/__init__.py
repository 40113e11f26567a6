"""The web app: policy hosting for every configured domain, the HTTPS rua endpoint that
takes TLS-RPT reports (RFC 8460 §5.4), and operator metrics on loopback."""
