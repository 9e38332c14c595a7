"""Garbage-collector and allocator settings for a pipeline worker process.

Measured on the passthrough benchmark (docs/benchmarks/pipeline.md): with CPython's default
thresholds a third of a worker's CPU went to the cyclic garbage collector. Every consumed batch
allocates thousands of tracked objects (messages, tuples, lists), so generation-0 collections
run every 700 allocations, and full collections walk every object the imports left (boto3,
pydantic, aiohttp: hundreds of thousands). A pipeline's data holds no reference cycles, so:
freeze what exists after start-up (never scanned again) and collect young objects every 50,000
allocations instead of 700. Cycles (exceptions, futures) are still collected, only less often.

Memory after a peak: glibc keeps freed heap in its arenas (one per thread that allocated, up to
8 x cores) instead of returning it, so a worker's RSS stayed at its catch-up peak until exit.
`give_back_memory` calls malloc_trim(0) (the worker does every TRIM_PERIOD_S); `malloc_arenas`
caps the arenas with mallopt(M_ARENA_MAX). Which helps is measured in docs/benchmarks/memory.md.
Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

GC_THRESHOLDS = (50_000, 20, 100)
TRIM_PERIOD_S = 5.0
MALLOC_ARENAS = 2          # M_ARENA_MAX (0: glibc's default, 8 x cores); measured, memory.md
_M_ARENA_MAX = -8          # mallopt parameter (malloc.h)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once: find_library runs ldconfig, and a worker trims every
    TRIM_PERIOD_S."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def give_back_memory() -> bool:
    """Return the heap's free pages to the OS (glibc malloc_trim); True if it released any."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def tune_worker_process(*, malloc_arenas: int = MALLOC_ARENAS) -> None:
    """Call once start-up imports are done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    libc = _libc()
    if malloc_arenas > 0 and libc is not None:
        libc.mallopt(_M_ARENA_MAX, malloc_arenas)
