"""The only layer that touches the network: DNS now; HTTPS fetch and SMTP probes follow."""
