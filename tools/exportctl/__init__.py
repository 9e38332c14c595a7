"""exportctl: the on-call CLI of exportd. It speaks only the masters' HTTP API (plain JSON)."""
