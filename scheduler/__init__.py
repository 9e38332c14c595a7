"""Pure placement logic: a `ClusterView` (frozen dataclasses) in, a `Plan` out.

No I/O, no threads, no clock reads, no imports of kazoo/grpc/aiohttp/kafka. Same input, same plan.
`plan` is the scheduler; `utilisation` and `estimates` are pure helpers for dry runs and
`exportctl explain` (what the planner sees before it plans). The contract with the master is in
the docstring of scheduler/planner.py and in docs/architecture/scheduler.md.
"""

from scheduler.estimates import Estimate, estimates
from scheduler.model import (
    ClusterView,
    Config,
    GroupAdvice,
    Move,
    MoveInFlight,
    Pending,
    Placement,
    Plan,
    Resources,
    Revocation,
    Server,
    Task,
)
from scheduler.planner import plan
from scheduler.utilisation import utilisation

__all__ = [
    "ClusterView",
    "Config",
    "Estimate",
    "GroupAdvice",
    "Move",
    "MoveInFlight",
    "Pending",
    "Placement",
    "Plan",
    "Resources",
    "Revocation",
    "Server",
    "Task",
    "estimates",
    "plan",
    "utilisation",
]
