"""Process settings for a pipeline worker: the garbage collector and the C allocator.

Measured on the passthrough benchmark (docs/benchmarks/pipeline.md): with CPython's default
thresholds a third of a worker's CPU went to the cyclic garbage collector. Every consumed batch
allocates thousands of tracked objects (messages, tuples, lists), so generation-0 collections
run every 700 allocations and full collections walk every object the imports left (boto3,
pydantic, aiohttp: hundreds of thousands). A pipeline's data holds no reference cycles, so:
freeze what exists after start-up (never scanned again) and collect young objects every 50,000
allocations instead of 700; cycles (exceptions, futures) are still collected, only less often.

glibc gives memory back to the OS as soon as the top of the heap is free, and serves blocks of
128 KiB and more (a joined batch, a compressed piece of file) with their own mmap: each batch
then faults its pages in again, which costs ~2 µs a page in a VM. Keeping 64 MiB of slack and
raising the mmap threshold keeps those pages mapped; the worker's memory bound is unchanged
(the slack is reused, not added per task).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

GC_THRESHOLDS = (50_000, 20, 100)
# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
MALLOC_SLACK_BYTES = 64 * 1024 * 1024
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024   # glibc's maximum for this setting


def tune_allocator() -> bool:
    """glibc only; elsewhere (musl, macOS) nothing changes. True if applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_TRIM_THRESHOLD, MALLOC_SLACK_BYTES), (_M_TOP_PAD, MALLOC_SLACK_BYTES),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)))


def tune_gc() -> None:
    """Call once start-up imports are done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_worker_process() -> None:
    tune_allocator()
    tune_gc()
