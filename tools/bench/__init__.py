"""Benchmarks of exportd's components (results in docs/benchmarks/ and docs/BENCHMARKS.md)."""
