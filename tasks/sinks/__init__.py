"""Sinks: where chunks go. Each `write` returns once the destination acknowledged the chunk (or
raises SinkError saying whether a retry may succeed); records the destination refused for good
come back as dead records."""

from tasks.sinks.base import CpuClock, Sink, backoff_delay

__all__ = ["CpuClock", "Sink", "backoff_delay"]
