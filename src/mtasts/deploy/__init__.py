"""Deploying MTA-STS for your own domains: configuration, records, policy ids and history."""
