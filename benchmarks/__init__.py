"""Benchmark scripts (each prints a table; see docs/performance.md and docs/accelerators.md)."""
