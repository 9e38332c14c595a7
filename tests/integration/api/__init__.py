"""The HTTP API and exportctl against real masters on real ZooKeeper and Kafka."""
