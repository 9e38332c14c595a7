"""Pure placement logic: a `ClusterView` (frozen dataclasses) in, a `Plan` out.

No I/O, no threads, no clock reads, no imports of kazoo/grpc/aiohttp/kafka. Same input, same plan.
"""

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

__all__ = [
    "ClusterView",
    "Config",
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
]
