"""A worker's own lease: no side effect after the deadline the server's main process renewed.

The server's main process holds the lease on its tasks (server/lease.py) and renews it with
every accepted ack. Its task worker processes (tasks/workers) must stop writing when the lease
runs out even if the main process is stopped or wedged and cannot tell them: so each renewal
sends the deadline itself to every worker (`LeaseUpdate`), and a worker checks it on its own
clock before every side effect — an upload, a rename, a produce, a transaction or offset
commit, a dead letter. Deadlines are CLOCK_MONOTONIC seconds, which is one clock for every
process of a Linux host, so they travel between processes unchanged.

`Fenced` is retryable: a task whose lease lapsed stops writing and backs off; it writes again
only if the lease is renewed (the main process resumed and its leader still acks it), and it is
stopped by its host otherwise. A write already on the wire when the deadline passes cannot be
recalled: that is what create-only objects and transactional producers are for
(docs/architecture/pipeline.md, "Fencing where data lands").
"""

from __future__ import annotations

import math
import time

from tasks.errors import Unavailable


class Fenced(Unavailable):
    """The worker's lease has run out: no side effect may start."""

    code = "fenced"


class WorkerFence:
    """The lease deadline as this process last heard it. Hosts without a lease (a test, a
    benchmark) use `unbounded()`. Reads and writes are single attribute assignments, safe from
    any thread of the worker."""

    def __init__(self, *, deadline: float = math.inf, margin_s: float = 0.5) -> None:
        self.deadline = deadline
        self.margin_s = margin_s

    @classmethod
    def unbounded(cls) -> WorkerFence:
        return cls()

    def renew(self, deadline: float) -> None:
        """The main process renewed the lease until `deadline` (time.monotonic seconds)."""
        self.deadline = deadline

    def revoke(self) -> None:
        """The main process self-fenced: nothing may be written until a renewal."""
        self.deadline = -math.inf

    def allows(self, now: float) -> bool:
        return now < self.deadline - self.margin_s

    def check(self, what: str) -> None:
        """Raise Fenced unless a side effect (`what`) may start now."""
        now = time.monotonic()
        if not self.allows(now):
            raise Fenced(f"{what}: the lease ran out {now - self.deadline + self.margin_s:.1f}s"
                         " ago; not writing until it is renewed", what=what)
