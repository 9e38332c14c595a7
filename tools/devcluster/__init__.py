"""`make dev`: the whole exportd cluster on one machine (infra, masters, servers, demo data)."""
