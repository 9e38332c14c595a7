"""Unit tests of exportctl: pure formatting, and the CLI against a served API app."""
