"""Unit tests of the master HTTP API (the HTTP translation over an in-memory control plane)."""
