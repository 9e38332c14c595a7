"""Small formatting helpers for the reasons a person reads (`exportctl explain`, task history)."""

from __future__ import annotations


def rate(bytes_per_s: float) -> str:
    """A network rate the way people say it: 512 B/s, 2.0 KB/s, 1.5 MB/s, 3.2 GB/s; `<1 B/s` for
    some load under one byte (not none: it matters where a server has no network)."""
    value = float(bytes_per_s)
    size = abs(value)
    if size < 1000.0:
        return "<1 B/s" if 0.0 < value < 0.5 else f"{value:.0f} B/s"
    if size < 1e6:
        return f"{value / 1e3:.1f} KB/s"
    if size < 1e9:
        return f"{value / 1e6:.1f} MB/s"
    return f"{value / 1e9:.1f} GB/s"


def load(cpu: float, net: float) -> str:
    """A load vector: `cpu 0.50, net 1.2 MB/s`."""
    return f"cpu {cpu:.2f}, net {rate(net)}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def evacuation_wait(what: str) -> str:
    """Why `what` (rebalance, count balance) moves nothing in a group that evacuates this round."""
    return (f"{what} waits for the next round: this round places the tasks of a lost server "
            "(evacuation), and nothing else moves in that round")


def task_cap_full(group: str, caps: str) -> str:
    """Why a task gets no server when every schedulable server of its group holds as many tasks
    as its memory budget allows (`caps`: "8", or "4 to 8" when they differ)."""
    return f"every schedulable server of group {group} is at its task cap ({caps})"
