"""The validator: turns records, policies, reports and probe results into findings."""
