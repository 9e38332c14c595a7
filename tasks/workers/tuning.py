"""Garbage-collector settings for a pipeline worker process.

Measured on the passthrough benchmark (docs/benchmarks/pipeline.md): with CPython's default
thresholds a third of a worker's CPU went to the cyclic garbage collector. Every consumed batch
allocates thousands of tracked objects (messages, tuples, lists), so generation-0 collections
run every 700 allocations, and full collections walk every object the imports left (boto3,
pydantic, aiohttp: hundreds of thousands). A pipeline's data holds no reference cycles, so:
freeze what exists after start-up (never scanned again) and collect young objects every 50,000
allocations instead of 700. Cycles (exceptions, futures) are still collected, only less often.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 100)


def tune_worker_process() -> None:
    """Call once start-up imports are done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
