"""Benchmarks: scripts that print tables (not tests, not part of the product)."""
