"""server.lease: renewal, remaining time, and the self-fencing point at ttl - margin."""

from __future__ import annotations

import pytest

from server.lease import Lease


def test_no_lease_before_the_first_ack() -> None:
    lease = Lease(margin_s=2.0)
    assert not lease.held(0.0)
    assert lease.remaining(0.0) == 0.0
    # Nothing was granted, so there is nothing to fence.
    assert not lease.must_self_fence(1000.0)


@pytest.mark.parametrize(
    ("now", "held", "fence", "remaining"),
    [(10.0, True, False, 8.0), (14.0, True, False, 4.0), (17.99, True, False, 0.01),
     (18.0, False, True, 0.0), (25.0, False, True, 0.0)],
)
def test_fences_at_ttl_minus_margin(now: float, held: bool, fence: bool,
                                    remaining: float) -> None:
    lease = Lease(margin_s=2.0)
    lease.renew(10.0, ttl_s=10.0)
    assert lease.held(now) is held
    assert lease.must_self_fence(now) is fence
    assert lease.remaining(now) == pytest.approx(remaining)


def test_renewal_extends_and_takes_the_new_ttl() -> None:
    lease = Lease(margin_s=1.0)
    lease.renew(0.0, ttl_s=5.0)
    lease.renew(3.0, ttl_s=3.0)
    assert lease.remaining(3.0) == pytest.approx(2.0)
    assert lease.must_self_fence(5.0)


def test_ttl_not_above_margin_gives_no_window() -> None:
    lease = Lease(margin_s=5.0)
    lease.renew(0.0, ttl_s=3.0)
    assert lease.window_s == 0.0
    assert lease.must_self_fence(0.0)


def test_drop_forgets_the_lease() -> None:
    lease = Lease(margin_s=1.0)
    lease.renew(0.0, ttl_s=5.0)
    lease.drop()
    assert not lease.held(1.0)
    assert not lease.must_self_fence(100.0)
