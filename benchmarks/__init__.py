"""Benchmark scripts (each prints a table; see the README's speed sections)."""
