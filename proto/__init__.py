"""The wire contract between servers and the leader: exportd.proto and its generated modules.

Regenerate with `make proto`; tests/unit/test_proto_generated.py fails when the committed modules
differ from what the pinned grpcio-tools would generate.
"""
