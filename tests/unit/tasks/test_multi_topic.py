"""Multi-topic jobs: `source.topics` or `source.topic_pattern` (RE2, whole-name match) instead of
one `source.topic`; which of a cluster's topics a job reads (tasks/topics.py); a task's topic is
the one in its id, not the job's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.errors import ValidationError
from tasks.runner import Assignment, task_id
from tasks.spec import JobSpec, parse_job_spec
from tasks.topics import job_topics, missing_topics


def _spec(**source: Any) -> dict[str, Any]:
    return {"id": "multi", "source": source, "sink": {"type": "file", "directory": "/x"}}


def _job(**source: Any) -> JobSpec:
    return parse_job_spec(_spec(**source))


def test_one_topic_a_list_or_a_pattern() -> None:
    assert _job(topic="a").source.named_topics() == ["a"]
    assert _job(topics=["a", "b.c"]).source.named_topics() == ["a", "b.c"]
    assert _job(topic_pattern=r"orders\..*").source.topic_pattern == r"orders\..*"


@pytest.mark.parametrize(("source", "field", "reason"), [
    ({}, "source", "one of topic, topics or topic_pattern"),
    ({"topic": "a", "topics": ["b"]}, "source", "only one of"),
    ({"topic": "a", "topic_pattern": "a.*"}, "source", "only one of"),
    ({"topics": []}, "source.topics", "at least 1"),
    ({"topics": ["a", "a"]}, "source.topics", "twice"),
    ({"topics": ["a", "no:colon"]}, "source.topics", "Kafka topic name"),
    ({"topic_pattern": r"(a)\1"}, "source.topic_pattern", "backreference"),
    ({"topic_pattern": r"a(?=b)"}, "source.topic_pattern", "lookaround"),
    ({"topic_pattern": "(a"}, "source.topic_pattern", "not a valid regex"),
    ({"topic_pattern": ""}, "source.topic_pattern", "at least 1"),
])
def test_bad_sources_are_refused_with_the_field(source: dict[str, Any], field: str,
                                                reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_job_spec(_spec(**source))
    assert err.value.field == field, err.value.details
    assert reason in err.value.message, err.value.message


def test_the_stored_json_round_trips() -> None:
    job = _job(topic_pattern=r"logs-.+")
    again = JobSpec.model_validate_json(job.to_json())
    assert again == job
    assert "topic" not in again.source.model_dump(exclude_none=True, exclude_defaults=True)


AVAILABLE = {"orders.eu": 3, "orders.us": 2, "orders.eu.dlq": 1, "xorders.eu": 1,
             "__consumer_offsets": 50, "_schemas": 1, "multi.dlq": 1, "out": 1}


def test_a_pattern_matches_whole_names_and_skips_internal_and_own_topics() -> None:
    job = _job(topic_pattern=r"orders\.[a-z]+")
    assert job_topics(job, AVAILABLE) == {"orders.eu": 3, "orders.us": 2}
    everything = parse_job_spec({**_spec(topic_pattern=".*"),
                                 "sink": {"type": "kafka", "topic": "out"}})
    # never its own dead letters or sink (a loop), nor Kafka's or a registry's internal topics
    assert job_topics(everything, AVAILABLE) == {
        "orders.eu": 3, "orders.us": 2, "orders.eu.dlq": 1, "xorders.eu": 1}
    assert missing_topics(job, AVAILABLE) == []


def test_named_topics_that_do_not_exist_are_missing_and_get_no_tasks() -> None:
    job = _job(topics=["orders.eu", "nope"])
    assert job_topics(job, AVAILABLE) == {"orders.eu": 3}
    assert missing_topics(job, AVAILABLE) == ["nope"]
    assert missing_topics(_job(topic="orders.us"), AVAILABLE) == []


def test_a_task_reads_the_topic_of_its_id() -> None:
    job = _job(topics=["a", "b"])
    assignment = Assignment(task_id(job.id, "b", 2), 1, job, 2)
    assert assignment.topic == "b"


def test_the_backfill_example_is_a_valid_job() -> None:
    path = Path(__file__).resolve().parents[3] / "examples" / "tenant-backfill.yaml"
    job = parse_job_spec(yaml.safe_load(path.read_text()))
    assert job.source.topic_pattern and job.rate_limit is not None
    assert job_topics(job, {"orders.eu-west": 3, "orders.dlq.x": 1}) == {"orders.eu-west": 3}
