"""TLS-RPT reports received: ingestion from every channel, lossless storage, analysis."""
