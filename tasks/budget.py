"""A server's memory and disk budget: how big it is, how it is split, what each task may take.
Pure: the caller passes what it read (cgroup files' text, physical RAM, the number of tasks);
nothing here reads a file or a clock. The shared counters that enforce it live in
tasks/spool.py (`MemoryBudget`), the settings in server/settings.py.

One budget per host (`server.memory_budget`), split by kind:

- prefetch (40 %): librdkafka's queue and fetch sizes of every consumer, set when a task's
  consumer is created from the prefetch share ÷ the host's tasks at that moment (librdkafka
  cannot resize a live consumer). When a consumer's queue is full, librdkafka stops fetching
  for it: that is the source pausing, and it never outruns its share.
- bodies (35 %): open and delivering S3 file bodies in memory; beyond it they spill to disk.
- uploads (15 %): requests in flight; bodies stream from memory or disk, so an upload holds
  botocore's buffers (UPLOAD_BUFFER_BYTES), not a copy of the file; the share sets how many
  uploads may run at once on the host.
- pipeline (10 %): consumed batches between the consumer and the chunk. Each batch is counted
  from its consume until the push stage has put it into its chunk; a task that holds batches
  does not consume another while the host's share is full (a task holding none always may:
  the bound is the share plus one batch per task).

The spill budget (`server.spill_budget`) bounds the bytes of bodies on disk. A body that finds
it full ends its chunk after the batch it holds (`cut_early`): the chunk is delivered and gives
its room back; a new body waits for room first (the pull pauses behind it). Cuts made this way
depend on timing, which the chained, create-only names allow (pipeline.md, "Fencing where data
lands"): a name is a function of the chunk's start offset only.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
# The host's budget when neither the settings nor a container limit say: a fraction of RAM.
PHYSICAL_FRACTION = 0.25
# Of a container's memory limit, this much is the budget; the rest is the processes' own
# (interpreters, libraries, threads: ~60-80 MB per worker process) and the kernel's page cache.
CONTAINER_FRACTION = 0.5
MIN_BUDGET = 64 * MiB
SHARES = {"prefetch": 0.40, "bodies": 0.35, "uploads": 0.15, "pipeline": 0.10}
# Per task prefetch: never more than before the budget (8 MiB queued + 4 MiB fetched), never
# less than a fetch of 256 KiB queued and 256 KiB in flight (the broker still returns a record
# batch larger than a fetch's limit whole, so nothing gets stuck).
PREFETCH_MAX = 12 * MiB
PREFETCH_MIN = 512 * 1024
# What one upload in flight holds: botocore hashes and sends a streamed body in 1 MiB reads,
# plus the socket's and TLS's buffers. An estimate; it sets the number of upload slots.
UPLOAD_BUFFER_BYTES = 4 * MiB
MIN_UPLOADS, MAX_UPLOADS = 2, 64
# "max" in cgroup v2's memory.max; v1 reports ~2**63 rounded to pages for no limit.
_NO_LIMIT_ABOVE = 1 << 60


@dataclass(frozen=True, slots=True)
class Split:
    """A host budget in bytes by kind."""

    total: int
    prefetch: int
    bodies: int
    uploads: int
    pipeline: int


def container_limit(v2_memory_max: str | None, v1_limit_in_bytes: str | None) -> int | None:
    """The cgroup's memory limit from the text of cgroup v2's memory.max or v1's
    memory.limit_in_bytes (None: the file was not there); None when there is no limit."""
    for text in (v2_memory_max, v1_limit_in_bytes):
        if text is None:
            continue
        value = text.strip()
        if value.isdigit() and 0 < int(value) < _NO_LIMIT_ABOVE:
            return int(value)
    return None


def default_budget(container: int | None, physical: int) -> int:
    """The memory budget when the settings give none: half the container's limit, else a
    quarter of the machine's RAM (other processes share an unlimited host)."""
    if container is not None:
        base = int(min(container, physical) * CONTAINER_FRACTION)
    else:
        base = int(physical * PHYSICAL_FRACTION)
    return max(MIN_BUDGET, base)


def split(total: int) -> Split:
    return Split(total, *(int(total * SHARES[k]) for k in ("prefetch", "bodies", "uploads",
                                                           "pipeline")))


def prefetch_bytes(share: int, tasks: int, reserved: int) -> int:
    """What a new task's consumer may prefetch: its even part of the prefetch share among the
    host's `tasks` (itself included), no more than is left unreserved by the consumers already
    made, clamped to [PREFETCH_MIN, PREFETCH_MAX]. Consumers made while fewer tasks ran keep
    their larger part until they close; the room check stops the sum from passing the share
    except by PREFETCH_MIN per task once it is used up."""
    even = share // max(tasks, 1)
    left = share - reserved
    return max(PREFETCH_MIN, min(PREFETCH_MAX, even, left))


def prefetch_properties(nbytes: int) -> dict[str, int]:
    """librdkafka properties holding a consumer to `nbytes`: half queued, half one fetch in
    flight. message.max.bytes goes down with fetch.max.bytes (librdkafka wants it no larger; a
    consumer never produces)."""
    queued = max(nbytes // 2, 256 * 1024)
    fetch = max(nbytes - queued, 256 * 1024)
    return {"queued.max.messages.kbytes": queued // 1024, "fetch.max.bytes": fetch,
            "max.partition.fetch.bytes": fetch, "message.max.bytes": min(fetch, 1_000_000)}


def upload_slots(uploads_share: int) -> int:
    """How many uploads may be in flight on the host at once."""
    return max(MIN_UPLOADS, min(MAX_UPLOADS, uploads_share // UPLOAD_BUFFER_BYTES))


# Task slots (issue 17): the most tasks a server takes, reported to the leader as `max_tasks`.
# A task's memory is dominated by fixed costs, not by its rate: its prefetch never goes below
# PREFETCH_MIN, and it may always hold one consumed batch, which at that floor is at most what
# its consumer prefetched (a queue plus a fetch: PREFETCH_MIN again). The shares that tasks draw
# on (prefetch and pipeline) must hold that floor for every task; the bodies' and uploads'
# shares are the budget's fixed part (they follow the files open and the upload slots, and
# spill or wait beyond their share, whatever the number of tasks).
TASK_FLOOR_BYTES = PREFETCH_MIN + PREFETCH_MIN
TASK_SHARES = ("prefetch", "pipeline")


def task_slots(total: int) -> int:
    """How many tasks a host budget of `total` bytes holds: its prefetch and pipeline shares
    divided by the floor each task keeps in them (TASK_FLOOR_BYTES), at least 1. 512 MiB: 256.
    The memory a task costs outside the budget (its threads, librdkafka's state) is not in it:
    that is sized with the pod's limit (docs/OPERATIONS.md, "Memory and disk")."""
    shares = int(total * sum(SHARES[k] for k in TASK_SHARES))
    return max(1, shares // TASK_FLOOR_BYTES)


# What a task and a process cost outside the budget (docs/benchmarks/memory.md, 200
# partitions): a task's consumer threads and librdkafka's and the clients' state, ~2.7-3.5 MB;
# an interpreter with the pipeline's libraries, ~85 MB.
TASK_OUTSIDE_BYTES = 3 * MiB
PROCESS_BYTES = 85 * MiB


def outside_slots(container: int, total: int, processes: int) -> int:
    """How many tasks a container's memory limit holds besides the budget `total`: what the
    limit leaves after the budget and the server's processes (its worker `processes` and the
    main one), at TASK_OUTSIDE_BYTES a task; at least 1."""
    left = container - total - (processes + 1) * PROCESS_BYTES
    return max(1, left // TASK_OUTSIDE_BYTES)


def max_tasks(configured: int | None, total: int | None, *, container: int | None = None,
              processes: int = 1) -> int | None:
    """The server's task cap: `server.max_tasks` when set, else the slots of its memory budget
    (`total`; None: no budget governs its tasks, e.g. a custom runner factory, and no cap),
    and, under a container memory limit, no more than what the limit holds beside the budget
    (`outside_slots`): a task's threads and clients' state are not in the budget."""
    if configured is not None:
        return configured
    if total is None:
        return None
    slots = task_slots(total)
    if container is not None:
        slots = min(slots, outside_slots(container, total, processes))
    return slots


def full(used: int, limit: int | None) -> bool:
    """A share is full (None: unbounded)."""
    return limit is not None and used >= limit


def spill_full(spilled: int, limit: int | None) -> bool:
    return full(spilled, limit)


def batch_bytes(values_bytes: int, records: int) -> int:
    """What a consumed batch holds in Python: its values plus ~110 B a record (the bytes
    object's header, its offset and timestamp ints, three list slots)."""
    return values_bytes + 110 * records


def cut_early(spilled: int, limit: int | None) -> bool:
    """A body whose last write took the host's spill past its budget ends its chunk now."""
    return limit is not None and spilled > limit
