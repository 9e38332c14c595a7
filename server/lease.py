"""The server's lease on its tasks: renewed by each accepted ack, pure arithmetic on a clock.

The leader reassigns a silent server's tasks only after `lease_ttl` without a report from it.
The server stops them itself (self-fencing) after `lease_ttl - margin` without an ack, so it has
stopped before anyone else may start them. Times are the host's monotonic clock; only the rate
of clocks matters, never their offset.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Lease:
    margin_s: float
    renewed_at: float | None = None
    ttl_s: float = 0.0

    def renew(self, now: float, ttl_s: float) -> None:
        """An ack accepted at `now` grants `ttl_s` from then."""
        self.renewed_at = now
        self.ttl_s = ttl_s

    def drop(self) -> None:
        """Forget the lease (after self-fencing): only a new ack grants one."""
        self.renewed_at = None
        self.ttl_s = 0.0

    @property
    def window_s(self) -> float:
        """How long after a renewal the server may run tasks. Never negative: a ttl shorter than
        the margin gives no window at all (tasks stop at once)."""
        return max(self.ttl_s - self.margin_s, 0.0)

    def held(self, now: float) -> bool:
        return self.renewed_at is not None and now < self.renewed_at + self.window_s

    def remaining(self, now: float) -> float:
        """Seconds until self-fencing (0 when no lease is held): the LEASE_REMAINING gauge."""
        if self.renewed_at is None:
            return 0.0
        return max(self.renewed_at + self.window_s - now, 0.0)

    def must_self_fence(self, now: float) -> bool:
        """True once a lease was granted and has run out (`lease_ttl - margin` without an ack)."""
        return self.renewed_at is not None and not self.held(now)
