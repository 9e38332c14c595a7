"""A server's task cap from its memory budget (tasks/budget.py task_slots, max_tasks; issue 17):
the prefetch and pipeline shares divided by the floor every task keeps in them."""

from __future__ import annotations

import pytest

from server.settings import ServerSettings
from tasks import budget
from tasks.budget import MiB


def test_slots_are_the_task_shares_over_the_per_task_floor() -> None:
    assert budget.TASK_FLOOR_BYTES == 2 * budget.PREFETCH_MIN == MiB
    assert budget.task_slots(512 * MiB) == 256
    assert budget.task_slots(1024 * MiB) == 512
    assert budget.task_slots(budget.MIN_BUDGET) == 32


def test_every_task_at_the_cap_keeps_its_floor_within_the_shares() -> None:
    for total in (budget.MIN_BUDGET, 300 * MiB, 512 * MiB, 8 * 1024 * MiB + 12345):
        n = budget.task_slots(total)
        shares = total * (budget.SHARES["prefetch"] + budget.SHARES["pipeline"])
        assert n * budget.TASK_FLOOR_BYTES <= shares
        # one more task would not keep its floor
        assert (n + 1) * budget.TASK_FLOOR_BYTES > shares


def test_a_tiny_budget_still_holds_one_task() -> None:
    assert budget.task_slots(1) == 1


def test_the_setting_wins_and_no_budget_means_no_cap() -> None:
    assert budget.max_tasks(7, 512 * MiB) == 7
    assert budget.max_tasks(None, 512 * MiB) == 256
    assert budget.max_tasks(None, None) is None
    assert budget.max_tasks(3, None) == 3


def test_max_tasks_setting() -> None:
    assert ServerSettings(id="s").max_tasks is None
    assert ServerSettings(id="s", max_tasks=2).max_tasks == 2
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ServerSettings(id="s", max_tasks=0)


def test_a_container_limit_bounds_the_cap_by_what_tasks_cost_outside_the_budget() -> None:
    # 1 GiB pod, default budget (half: 512 MiB), 2 workers: 512 - 3 x 85 MiB left, 3 MiB a task.
    assert budget.outside_slots(1024 * MiB, 512 * MiB, 2) == (512 - 255) // 3
    assert budget.max_tasks(None, 512 * MiB, container=1024 * MiB, processes=2) == 85
    # A large pod: the budget's slots are the smaller bound.
    assert budget.max_tasks(None, 512 * MiB, container=8192 * MiB, processes=2) == 256
    # A pod too small for its processes still takes one task; a setting wins.
    assert budget.max_tasks(None, 64 * MiB, container=128 * MiB, processes=2) == 1
    assert budget.max_tasks(9, 512 * MiB, container=1024 * MiB, processes=2) == 9
