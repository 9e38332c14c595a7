"""Operator tooling: exportctl (the CLI), local infrastructure, the local cluster, benchmarks."""
