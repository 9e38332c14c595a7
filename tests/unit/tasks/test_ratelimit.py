"""Per-job rate limits (tasks/ratelimit.py): a task's share of the job's limit and the token
bucket the pull stage waits on. Pure: time is passed in."""

from __future__ import annotations

import pytest

from tasks.errors import ValidationError
from tasks.ratelimit import Share, Throttle, task_share
from tasks.spec import RateLimit, parse_job_spec


def test_the_job_limit_is_split_evenly_between_its_tasks() -> None:
    limit = RateLimit(records_per_s=1000, bytes_per_s=4e6)
    assert task_share(limit, 4) == Share(250.0, 1e6)
    assert task_share(RateLimit(records_per_s=10), 0) == Share(10.0, None)  # unknown count: all
    assert task_share(None, 4) is None


@pytest.mark.parametrize("limit", [{}, {"records_per_s": 0}, {"bytes_per_s": -1}])
def test_a_rate_limit_needs_a_positive_rate(limit: dict[str, float]) -> None:
    with pytest.raises(ValidationError) as err:
        parse_job_spec({"id": "j", "source": {"topic": "t"}, "rate_limit": limit,
                        "sink": {"type": "file", "directory": "/x"}})
    assert err.value.field.startswith("rate_limit"), err.value.details


def _simulate(throttle: Throttle, seconds: float, batch: int, value_bytes: int) -> int:
    """A pull loop against a source that always has records: how many it takes in `seconds`."""
    now, taken = 0.0, 0
    for _ in range(1_000_000):
        wait = throttle.wait(now)
        if wait > 0:
            throttle.waited(wait)
            now += wait
            continue
        if now >= seconds:
            break
        n = min(batch, throttle.allowance(now))
        throttle.charge(n, n * value_bytes, now)
        taken += n
        now += 0.001   # the poll itself
    return taken


def test_records_per_second_hold_over_thirty_seconds() -> None:
    throttle = Throttle(Share(500.0, None), now=0.0)
    taken = _simulate(throttle, 30.0, batch=1000, value_bytes=100)
    assert 500 * 30 <= taken <= 500 * 31, taken   # the burst is at most one second's worth
    assert throttle.throttled_s > 25


def test_bytes_per_second_hold_whatever_the_batch() -> None:
    throttle = Throttle(Share(None, 100_000.0), now=0.0)
    taken = _simulate(throttle, 30.0, batch=1000, value_bytes=1000)   # 1 MB batches
    # bytes are known only after a batch: at most one batch over, and a wait that pays it back
    assert 100 * 30 <= taken <= 100 * 31 + 1000, taken


def test_the_tighter_of_both_limits_wins() -> None:
    throttle = Throttle(Share(1000.0, 10_000.0), now=0.0)
    taken = _simulate(throttle, 10.0, batch=100, value_bytes=100)
    assert taken <= 100 * 11 + 100, taken


def test_an_idle_task_saves_at_most_one_second() -> None:
    throttle = Throttle(Share(100.0, None), now=0.0)
    assert throttle.allowance(3600.0) == 100
    throttle.charge(100, 0, 3600.0)
    assert throttle.wait(3600.0) == pytest.approx(0.05)   # MIN_PULL_S of its rate
