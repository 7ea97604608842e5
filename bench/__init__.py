"""Benchmarks and data generators (``make bench``); not part of the test run."""
