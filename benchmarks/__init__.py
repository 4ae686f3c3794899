"""Benchmarks of hailuo-async against the local fake service (see benchmarks/README.md)."""
