"""Small formatting helpers for the reasons a person reads (`exportctl explain`, task history)."""

from __future__ import annotations


def rate(bytes_per_s: float) -> str:
    """A network rate the way people say it: 512 B/s, 2.0 KB/s, 1.5 MB/s, 3.2 GB/s."""
    value = float(bytes_per_s)
    if 0.0 < value < 0.5:
        return "<1 B/s"  # some load, not none: it matters where a server has no network
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if abs(value) < 1000.0 or unit == "GB/s":
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000.0
    return f"{value:.1f} GB/s"  # pragma: no cover - the loop always returns


def load(cpu: float, net: float) -> str:
    """A load vector: `cpu 0.50, net 1.2 MB/s`."""
    return f"cpu {cpu:.2f}, net {rate(net)}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
