"""Per-job rate limits: a task's share of its job's limit, and the token buckets its pull waits on.

A job may cap its records/s and its bytes/s (`rate_limit` in the spec). The cap is the job's, so
one tenant's backfill cannot take a group's servers from the others; it is enforced per task, with
no coordination between servers: each task gets `limit / the job's task count` (`task_share`; the
leader sends the count with every assignment) and throttles only its own pull.

`Throttle` holds one token bucket per limited dimension. Buckets fill at the share's rate and hold
at most BURST_S seconds of it (an idle task saves no more than that). The pull stage asks
`allowance(now)` for how many records it may take (the consume is cut to it), `charge`s what it
took, and waits `wait(now)` before the next pull (until MIN_PULL_S of the rate is there). Bytes
are known only after a batch, so a bucket may go into debt by one batch; the wait pays the debt
back, and the batch size is then cut to the bytes left at the average record size seen so far.
Over any window of T seconds a task takes at most (T + BURST_S) x its rate, plus one batch's
bytes.

Pure: the caller passes `now` (monotonic seconds); nothing here sleeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks.spec import RateLimit

BURST_S = 1.0
# A throttled pull waits for this much of its rate (at least one record), not for one record:
# fewer, larger consumes (at 500 records/s: 20 a second of 25 records).
MIN_PULL_S = 0.05
UNLIMITED = 1 << 31
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Share:
    """One task's part of its job's limit; None: that dimension is not limited."""

    records_per_s: float | None = None
    bytes_per_s: float | None = None


def task_share(limit: RateLimit | None, job_tasks: int) -> Share | None:
    """The job's limit divided evenly between its tasks (a count <= 0, unknown, gets it all)."""
    if limit is None:
        return None
    tasks = max(job_tasks, 1)
    return Share(None if limit.records_per_s is None else limit.records_per_s / tasks,
                 None if limit.bytes_per_s is None else limit.bytes_per_s / tasks)


class TokenBucket:
    """Tokens at `rate` per second up to `rate * BURST_S`; `take` may leave it in debt."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(rate * BURST_S, 1.0)
        self.level = self.capacity
        self._at = now

    def refill(self, now: float) -> float:
        if now > self._at:
            self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
            self._at = now
        return self.level

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds `amount` (0 when it does)."""
        missing = min(amount, self.capacity) - self.refill(now)
        return 0.0 if missing <= _EPSILON else missing / self.rate


class Throttle:
    def __init__(self, share: Share, now: float) -> None:
        self.share = share
        self.records = (None if share.records_per_s is None
                        else TokenBucket(share.records_per_s, now))
        self.bytes = None if share.bytes_per_s is None else TokenBucket(share.bytes_per_s, now)
        self._record_bytes = 0.0     # average value size seen, 0 before the first batch
        self._seen = [0, 0]          # records, bytes
        self.throttled_s = 0.0       # total time the pull waited on the limit (a metric)

    def allowance(self, now: float) -> int:
        """How many records the next pull may take (0: wait first)."""
        allowed = UNLIMITED
        if self.records is not None:
            allowed = min(allowed, math.floor(self.records.refill(now) + _EPSILON))
        if self.bytes is not None and self._record_bytes > 0:
            allowed = min(allowed, math.floor(self.bytes.refill(now) / self._record_bytes
                                              + _EPSILON))
        return max(allowed, 0)

    def charge(self, records: int, nbytes: int, now: float) -> None:
        if self.records is not None:
            self.records.take(records, now)
        if self.bytes is not None:
            self.bytes.take(nbytes, now)
        if records:
            self._seen[0] += records
            self._seen[1] += nbytes
            self._record_bytes = self._seen[1] / self._seen[0]

    def wait(self, now: float) -> float:
        """Seconds before the next pull: until MIN_PULL_S of the rate, and at least one record
        (of the average size seen), fits."""
        wait = 0.0
        if self.records is not None:
            want = max(1.0, self.records.rate * MIN_PULL_S)
            wait = self.records.wait_for(want, now)
        if self.bytes is not None:
            want = max(self._record_bytes, self.bytes.rate * MIN_PULL_S)
            wait = max(wait, self.bytes.wait_for(want, now))
        return wait

    def waited(self, seconds: float) -> None:
        self.throttled_s += seconds
