"""Smoke tests proving each harness server is real: ZooKeeper, Kafka (KRaft) and S3 (moto)."""

from __future__ import annotations

import uuid

import boto3
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # typed here; admin re-exports it untyped
from kazoo.client import KazooClient


def test_zookeeper_ephemeral_node_round_trips(zookeeper: str) -> None:
    client = KazooClient(hosts=zookeeper, timeout=10)
    client.start(timeout=15)
    try:
        path = f"/smoke/{uuid.uuid4().hex}"
        client.create(path, b"hello", ephemeral=True, makepath=True)
        data, stat = client.get(path)
        assert data == b"hello"
        assert stat.ephemeralOwner == client.client_id[0]
    finally:
        client.stop()
        client.close()


def test_kafka_produces_and_consumes_ten_thousand_records(kafka: str) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)

    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 5})
    for i in range(10_000):
        producer.produce(topic, key=str(i).encode(), value=f"record-{i}".encode())
        producer.poll(0)
    assert producer.flush(30) == 0

    consumer = Consumer({
        "bootstrap.servers": kafka, "group.id": f"smoke-{topic}", "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen: set[bytes] = set()
    partitions: set[int] = set()
    try:
        for _ in range(200):  # bounded: each consume waits at most 1 s
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                value, partition = msg.value(), msg.partition()
                assert msg.error() is None and value is not None and partition is not None
                seen.add(value)
                partitions.add(partition)
            if len(seen) == 10_000:
                break
    finally:
        consumer.close()
    assert len(seen) == 10_000
    assert partitions == {0, 1, 2}


def test_s3_creates_bucket_puts_and_lists(s3: str) -> None:
    client = boto3.client(
        "s3", endpoint_url=s3, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"payload")
    listed = client.list_objects_v2(Bucket=bucket)
    assert [obj["Key"] for obj in listed["Contents"]] == ["a/b.txt"]
    assert client.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"payload"
