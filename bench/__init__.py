"""Benchmarks: each prints a table of measured values beside their targets. Not tests."""
