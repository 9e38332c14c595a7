"""Multi-topic jobs on a real leader, Kafka and ZooKeeper: a `topic_pattern` job gets tasks for a
topic created after it was submitted (and for partitions added to it), a `topics` job for every
listed topic; a listed topic that does not exist is a 400 on `source.topics`."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions

from master.api.ports import TaskFilter
from master.process import Master
from master.session import directive_message
from tasks.errors import ValidationError
from tasks.runner import task_id
from tasks.spec import JobSpec, parse_job_spec
from tests.integration.master.conftest import StartMaster, StartSim, until
from tests.integration.pipeline.kit import create_topic


def _spec(job_id: str, **source: object) -> JobSpec:
    return parse_job_spec({"id": job_id, "source": source,
                           "sink": {"type": "file", "directory": "/tmp/exportd-test"}})


def _tasks(master: Master, job: str) -> set[str]:
    return {t.id for t in master.control.list_tasks(TaskFilter(job=job))}


async def test_a_pattern_job_picks_up_a_topic_created_after_submission(
        start_master: StartMaster, start_sim: StartSim, kafka: str) -> None:
    prefix = f"mt{uuid.uuid4().hex[:8]}"
    first = create_topic(kafka, f"{prefix}.orders.eu", partitions=2)
    create_topic(kafka, f"other{prefix}.orders.eu")    # a name the pattern must not match
    master = await start_master("m1")
    lead = await master.wait_leading(30)
    sim = await start_sim("srv-a")
    await until(lambda: sim.acks, 30, "the server acknowledged")

    view = await master.control.create_job(_spec("pattern", topic_pattern=rf"{prefix}\.orders\..+"))
    assert set(view.tasks) == {task_id("pattern", first, p) for p in range(2)}

    later = create_topic(kafka, f"{prefix}.orders.us", partitions=3)
    expected = {task_id("pattern", t, p) for t, n in ((first, 2), (later, 3)) for p in range(n)}
    await until(lambda: _tasks(master, "pattern") == expected, 30,
                "tasks for the topic created after submission")
    await until(lambda: set(sim.desired) == expected, 30, "the new topic's tasks placed")
    assert lead.state is not None
    # every assignment tells the server the job's task count: its share of a rate_limit
    message, _ = directive_message(lead.state, "srv-a", lead.term.epoch, 1)
    assert {a.job_tasks for a in message.directive.desired} == {5}

    # partitions added to a matched topic later get tasks too
    admin = AdminClient({"bootstrap.servers": kafka})   # kept: the future needs its handle
    admin.create_partitions([NewPartitions(later, 4)])[later].result(30)
    await until(lambda: task_id("pattern", later, 3) in _tasks(master, "pattern"), 30,
                "a task for the added partition")
    by_topic = {t.topic for t in master.control.list_tasks(TaskFilter(job="pattern"))}
    assert by_topic == {first, later}


async def test_a_topics_job_reads_each_listed_topic_and_refuses_a_missing_one(
        start_master: StartMaster, kafka: str) -> None:
    prefix = f"mt{uuid.uuid4().hex[:8]}"
    a = create_topic(kafka, f"{prefix}-a", partitions=1)
    b = create_topic(kafka, f"{prefix}-b", partitions=2)
    master = await start_master("m1")
    await master.wait_leading(30)
    view = await master.control.create_job(_spec("listed", topics=[a, b]))
    assert set(view.tasks) == {task_id("listed", a, 0), task_id("listed", b, 0),
                               task_id("listed", b, 1)}
    with pytest.raises(ValidationError) as err:
        await master.control.create_job(_spec("missing", topics=[a, f"{prefix}-nope"]))
    assert err.value.field == "source.topics"
    assert f"{prefix}-nope" in err.value.message
