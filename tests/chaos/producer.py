"""The chaos test's data: a steady producer of unique ids, and the source topic read back.

Every record is a JSON object `{"id": "<run>-<n>", "n": n, "pad": "..."}` whose id is unique in
the run; record n goes to partition n mod P, so every partition gets a steady flow. The sequence
(ids, pads) is a function of the seed. What counts as produced is what the source topic holds at
the end (`read_source`), not what the producer thinks it sent: a record whose delivery report
was lost may still be in Kafka, and the exporters must export it too.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition


@dataclass
class UniqueIdProducer:
    """Writes `rate` records/s on a thread until stopped, `max_records` or `max_seconds`."""

    bootstrap: str
    topic: str
    partitions: int
    rate: float
    seed: int
    max_records: int = 200_000
    max_seconds: float = 600.0
    sent: int = 0
    acked: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_id = f"{random.Random(self.seed).getrandbits(32):08x}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        self.acked.add(json.loads(msg.value() or b"{}")["id"])

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 10,
                             "enable.idempotence": True, "acks": "all"})
        rng = random.Random(self.seed)
        started = time.monotonic()
        try:
            while (self.sent < self.max_records and not self._stop.is_set()
                   and time.monotonic() - started < self.max_seconds):
                n = self.sent
                # k: what the partitioned job's directories are named by.
                value = {"id": f"{self.run_id}-{n:07d}", "n": n, "k": n // 6 % 3,
                         "pad": "x" * rng.randrange(8, 120)}
                producer.produce(self.topic, value=json.dumps(value).encode(),
                                 partition=n % self.partitions, on_delivery=self._delivered)
                self.sent += 1
                producer.poll(0)
                delay = started + self.sent / self.rate - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        finally:
            producer.flush(30)


@dataclass(frozen=True)
class SourceData:
    """What the source topic holds: id by (partition, offset), and each partition's
    [first offset, end offset)."""

    ids: dict[tuple[int, int], str]
    bounds: dict[int, tuple[int, int]]


def read_to_end(consumer: Consumer, bounds: dict[tuple[str, int], tuple[int, int]],
                timeout: float) -> list[Message]:
    """Consume each (topic, partition) from its first offset until its position reaches its end
    offset (`bounds`); raise TimeoutError naming the laggards after `timeout` seconds. (With
    read_committed an open transaction holds the position back: that times out too.)"""
    consumer.assign([TopicPartition(t, p, first) for (t, p), (first, _) in bounds.items()])
    messages: list[Message] = []
    left = {tp for tp, (first, end) in bounds.items() if first < end}
    deadline = time.monotonic() + timeout
    while left:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not read to the end within {timeout:.0f}s: "
                               f"{sorted(left)} short of {bounds}")
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is None:
                messages.append(msg)
        for tp in consumer.position([TopicPartition(t, p) for t, p in left]):
            if tp.offset >= bounds[(tp.topic, tp.partition)][1]:
                left.discard((tp.topic, tp.partition))
    return messages


def watermarks(consumer: Consumer, topic: str, partitions: int) -> dict[tuple[str, int],
                                                                       tuple[int, int]]:
    out = {}
    for p in range(partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                   cached=False)
        out[(topic, p)] = (int(low), int(high))
    return out


def read_source(bootstrap: str, topic: str, partitions: int, timeout: float = 60.0) -> SourceData:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-audit-{topic}",
                         "enable.auto.commit": False})
    try:
        bounds = watermarks(consumer, topic, partitions)
        messages = read_to_end(consumer, bounds, timeout)
        ids = {(m.partition() or 0, m.offset() or 0): json.loads(m.value() or b"{}")["id"]
               for m in messages}
        return SourceData(ids, {p: b for (_, p), b in bounds.items()})
    finally:
        consumer.close()
