"""psutil sampler: what this machine offers (capacity) and uses (usage), once per heartbeat.

CPU is what this process and its worker processes used since the previous sample, as a fraction
of the cores the server offers: in a container the machine-wide figure would be the node's, and
several servers on one host would each count all of them. Network rates are the host's (in a
pod: the pod's) byte counters' deltas over the elapsed time, unless `shared_host` says the
counters are shared, when only the tasks' own measured bytes count. Memory is the resident size
of this process and its workers, against the machine's total.

Rates are taken over the last RATE_WINDOW_S at least, not since the previous heartbeat: CPU
times come in 10 ms ticks per process, so over one 0.2 s heartbeat an idle server's figure
jumped by 0.05 of a core per tick, and the first report — sent ~30 ms after start-up, as soon
as the session opened — showed an idle 1-core server 50-100 % busy. Until MIN_RATE_WINDOW_S have
passed since the sampler was built, rates are reported as 0: the server has just started and
runs nothing yet.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import psutil

from proto import exportd_pb2 as pb
from server.settings import CapacitySettings

RATE_WINDOW_S = 1.0
MIN_RATE_WINDOW_S = 0.5
HISTORY = 64   # samples kept; at heartbeats under 1/64 s the window gets shorter, never longer


def cpu_cores(capacity: CapacitySettings) -> float:
    if capacity.cpu_cores is not None:
        return capacity.cpu_cores
    return float(psutil.cpu_count(logical=True) or 1)


def worker_processes(capacity: CapacitySettings) -> int:
    """One worker process per core unless configured: CPU-bound transforms use every core."""
    if capacity.worker_processes is not None:
        return capacity.worker_processes
    return max(int(cpu_cores(capacity)), 1)


def rate(previous: int, current: int, elapsed_s: float) -> float:
    """Per-second rate of a counter; 0 for no time elapsed or a counter that went back (reset)."""
    if elapsed_s <= 0 or current < previous:
        return 0.0
    return (current - previous) / elapsed_s


@dataclass(slots=True)
class Counters:
    at: float
    bytes_recv: int
    bytes_sent: int
    cpu_seconds: float


def _tree_cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # a worker exited between listing and reading
            continue
        total += times.user + times.system
    return total


def _counters(process: psutil.Process, shared_host: bool) -> Counters:
    cpu = _tree_cpu_seconds(process)
    if shared_host:
        return Counters(time.monotonic(), 0, 0, cpu)
    counters = psutil.net_io_counters()
    return Counters(time.monotonic(), counters.bytes_recv, counters.bytes_sent, cpu)


class Sampler:
    """Call `sample()` once per heartbeat; rates cover at least the last RATE_WINDOW_S."""

    def __init__(self, capacity: CapacitySettings) -> None:
        self.capacity = pb.Resources(cpu_cores=cpu_cores(capacity),
                                     net_bytes_per_s=capacity.net_bytes_per_s)
        self._process = psutil.Process()
        self._shared_host = capacity.shared_host
        self._history: deque[Counters] = deque(
            [_counters(self._process, self._shared_host)], maxlen=HISTORY)

    def _rss(self) -> int:
        total = 0
        for proc in [self._process, *self._process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a worker exited between listing and reading
                continue
        return total

    def sample(self) -> pb.Usage:
        now = _counters(self._process, self._shared_host)
        base = window_base(self._history, now.at)
        self._history.append(now)
        elapsed = now.at - base.at
        if elapsed < MIN_RATE_WINDOW_S:  # just started: rate() reports 0 for no time elapsed
            elapsed = 0.0
        # A worker that exited takes its CPU seconds with it: the sum may go back; rate() gives 0.
        cores_used = rate(int(base.cpu_seconds * 1e6), int(now.cpu_seconds * 1e6),
                          elapsed) / 1e6
        return pb.Usage(
            cpu_fraction=min(max(cores_used / max(self.capacity.cpu_cores, 1e-9), 0.0), 1.0),
            net_in_bytes_per_s=rate(base.bytes_recv, now.bytes_recv, elapsed),
            net_out_bytes_per_s=rate(base.bytes_sent, now.bytes_sent, elapsed),
            memory_rss_bytes=self._rss(),
            memory_total_bytes=psutil.virtual_memory().total,
        )


def window_base(history: deque[Counters], now_at: float) -> Counters:
    """The sample to measure rates from: the newest one at least RATE_WINDOW_S before `now_at`
    (older ones are dropped), or the oldest there is while the history is shorter."""
    while len(history) > 1 and now_at - history[1].at >= RATE_WINDOW_S:
        history.popleft()
    return history[0]
