"""A demo producer: nginx combined-log lines into a Kafka topic, bounded in rate, count and time.

Used by `make dev` (a steady trickle the demo job exports) and by the e2e tests (a known number of
records to count back). Lines are deterministic for a given seed so tests can predict them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Producer

PATHS = ("/", "/index.html", "/api/orders", "/api/users/42", "/static/app.js", "/healthz",
         "/login", "/search?q=kafka")
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
STATUSES = (200, 200, 200, 200, 201, 204, 301, 304, 400, 404, 500, 503)
AGENTS = ("curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "kube-probe/1.29", "Go-http-client/1.1")


def nginx_line(rng: random.Random, at: float) -> str:
    """One access-log line in nginx's `combined` format."""
    ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(at))
    method, path = rng.choice(METHODS), rng.choice(PATHS)
    status, size = rng.choice(STATUSES), rng.randrange(0, 50_000)
    return (f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} '
            f'"-" "{rng.choice(AGENTS)}"')


@dataclass
class DemoProducer:
    """Writes `rate` lines/s to `topic` on a thread until `max_records` or `max_seconds`."""

    bootstrap: str
    topic: str
    rate: float = 50.0
    max_records: int = 1_000_000
    max_seconds: float = 24 * 3600.0
    seed: int = 7
    produced: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _encoder(self) -> Callable[[random.Random, int], tuple[bytes, bytes | None]]:
        """(value, key) of the record numbered i."""
        return lambda rng, i: (nginx_line(rng, time.time()).encode(), str(i).encode())

    def _run(self) -> None:
        encode = self._encoder()
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20})
        rng = random.Random(self.seed)
        started = time.monotonic()
        try:
            while (self.produced < self.max_records and not self._stop.is_set()
                   and time.monotonic() - started < self.max_seconds):
                value, key = encode(rng, self.produced)
                producer.produce(self.topic, value=value, key=key)
                self.produced += 1
                producer.poll(0)
                # Pace to `rate` records/s; waiting on the event keeps Ctrl-C prompt.
                due = started + self.produced / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        finally:
            producer.flush(10)


def produce_lines(bootstrap: str, topic: str, count: int, seed: int = 7) -> list[str]:
    """Produce exactly `count` lines as fast as Kafka takes them; return them (for tests)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = random.Random(seed)
    lines = [nginx_line(rng, time.time()) for _ in range(count)]
    for i, line in enumerate(lines):
        producer.produce(topic, value=line.encode(), key=str(i).encode())
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} demo records not delivered within 60 s")
    return lines


# The demo Avro topic's record: an order, as a payments service would publish it.
ORDER_SCHEMA = """{"type": "record", "name": "Order", "namespace": "exportd.demo", "fields": [
  {"name": "id", "type": "long"},
  {"name": "customer", "type": "string"},
  {"name": "region", "type": {"type": "enum", "name": "Region", "symbols": ["eu", "us", "apac"]}},
  {"name": "amount", "type": "double"},
  {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "coupon", "type": ["null", "string"], "default": null}
]}"""


@dataclass
class AvroOrderProducer(DemoProducer):
    """Avro orders (Confluent wire format, the schema registered in `registry`), paced like the
    demo lines: the demo Avro job's input."""

    registry: str = ""
    rate: float = 10.0
    seed: int = 11

    def _encoder(self) -> Callable[[random.Random, int], tuple[bytes, bytes | None]]:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        serialize = AvroSerializer(SchemaRegistryClient({"url": self.registry}), ORDER_SCHEMA)
        ctx = SerializationContext(self.topic, MessageField.VALUE)

        def encode(rng: random.Random, i: int) -> tuple[bytes, bytes | None]:
            order = {"id": i, "customer": f"c-{rng.randrange(1000):03d}",
                     "region": rng.choice(("eu", "us", "apac")),
                     "amount": round(rng.uniform(1, 500), 2), "at": int(time.time() * 1000),
                     "coupon": rng.choice((None, None, "WINTER"))}
            return serialize(order, ctx) or b"", None
        return encode
