"""The pure parts of the Kafka and HTTP sinks' delivery: what a librdkafka error means for the
producer, the task's transactional.id, and the HTTP idempotency key."""

from __future__ import annotations

from confluent_kafka import KafkaError

from tasks.batching import Chunk
from tasks.sinks.http import idempotency_key
from tasks.sinks.kafka import Failure, failure_kind, kind_of, transactional_id


def test_fenced_codes_end_the_producer_whatever_their_flags() -> None:
    for code in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                 KafkaError.INVALID_PRODUCER_EPOCH):
        for flags in ({}, {"retriable": True}, {"abortable": True}, {"fatal": True}):
            args = {"fatal": False, "retriable": False, "abortable": False, **flags}
            assert failure_kind(code, **args) is Failure.FENCED


def test_fatal_beats_abortable_and_abortable_beats_retriable() -> None:
    code = KafkaError._TIMED_OUT
    assert failure_kind(code, fatal=True, retriable=True, abortable=True) is Failure.FATAL
    assert failure_kind(code, fatal=False, retriable=True, abortable=True) is Failure.ABORT
    assert failure_kind(code, fatal=False, retriable=True, abortable=False) is Failure.RETRY


def test_an_error_with_no_flag_is_fatal_as_librdkafka_asks() -> None:
    assert failure_kind(KafkaError._STATE, fatal=False, retriable=False,
                        abortable=False) is Failure.FATAL


def test_kind_of_reads_the_flags_of_a_kafka_error() -> None:
    assert kind_of(KafkaError(KafkaError._MSG_TIMED_OUT, "x",
                              txn_requires_abort=True)) is Failure.ABORT
    assert kind_of(KafkaError(KafkaError._TIMED_OUT, "x", retriable=True)) is Failure.RETRY
    assert kind_of(KafkaError(KafkaError._FENCED, "x", fatal=True)) is Failure.FENCED


def test_the_transactional_id_depends_on_the_task_only() -> None:
    assert transactional_id("job-a:logs:3") == "exportd-job-a:logs:3"
    assert transactional_id("job-a:logs:3") != transactional_id("job-a:logs:4")


def test_the_idempotency_key_names_the_offsets_of_the_batch() -> None:
    assert idempotency_key("job-a:logs:3", Chunk(100, 150)) == "job-a:logs:3:100-150"
    # A batch cut differently from the same start (time-based rotation) has another key.
    assert idempotency_key("job-a:logs:3", Chunk(100, 140)) != "job-a:logs:3:100-150"
