"""Which of a Kafka cluster's topics a job reads. Pure: the caller passes the cluster's topics.

A job names one topic (`source.topic`), a list (`source.topics`) or a pattern
(`source.topic_pattern`, RE2, whole-name match). Its tasks are one per partition of every topic
it reads (`tasks.runner.task_id`); the leader calls `job_topics` at submission and every
`kafka.partition_check_interval`, so topics created later (a pattern's, or a listed one that did
not exist yet) and partitions added later get tasks then.

A pattern never selects a topic whose name starts with `_` (Kafka's `__consumer_offsets` and
`__transaction_state`, a registry's `_schemas`), nor the job's own dead-letter topic or Kafka sink
topic: `.*` would otherwise read back what the job writes, for ever.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from tasks.expressions import compile_topic_pattern
from tasks.spec import JobSpec, KafkaSink


@functools.lru_cache(maxsize=256)
def _matcher(pattern: str) -> Callable[[str], bool]:
    return compile_topic_pattern(pattern)


def _own_topics(job: JobSpec) -> set[str]:
    own = {job.dead_letter_topic}
    if isinstance(job.sink, KafkaSink):
        own.add(job.sink.topic)
    return own


def job_topics(job: JobSpec, available: Mapping[str, int]) -> dict[str, int]:
    """The job's topics that exist, with their partition counts, in name order."""
    pattern = job.source.topic_pattern
    if pattern is None:
        names = [t for t in job.source.named_topics() if t in available]
    else:
        matches, own = _matcher(pattern), _own_topics(job)
        names = [t for t in available
                 if not t.startswith("_") and t not in own and matches(t)]
    return {t: available[t] for t in sorted(names)}


def missing_topics(job: JobSpec, available: Mapping[str, int]) -> list[str]:
    """Topics the spec names that the cluster does not have (a pattern names none)."""
    return [t for t in job.source.named_topics() if t not in available]


def source_field(job: JobSpec) -> str:
    """The spec field an error about the job's topics points at."""
    if job.source.topic_pattern is not None:
        return "source.topic_pattern"
    return "source.topics" if job.source.topics is not None else "source.topic"
