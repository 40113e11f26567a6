"""Benchmarks, run on demand with ``make bench``; timings are never asserted in tests."""
