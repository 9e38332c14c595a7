"""Control plane: election and fencing, ZooKeeper store, gRPC session service, reconcile loop,
HTTP API. Decisions live in plain functions; gRPC, ZooKeeper and HTTP handlers only translate."""
