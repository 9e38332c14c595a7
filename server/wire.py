"""Translation between the heartbeat protocol (proto) and the task contract (tasks.runner)."""

from __future__ import annotations

from proto import exportd_pb2 as pb
from tasks.runner import Assignment, TaskState, TaskStats
from tasks.spec import job_spec_from_json

_STATES = {
    TaskState.STARTING: pb.TASK_STATE_STARTING,
    TaskState.RUNNING: pb.TASK_STATE_RUNNING,
    TaskState.DRAINING: pb.TASK_STATE_DRAINING,
    TaskState.STOPPED: pb.TASK_STATE_STOPPED,
    TaskState.FAILED: pb.TASK_STATE_FAILED,
}


def task_state_to_proto(state: TaskState) -> pb.TaskState:
    return _STATES[state]


def task_status(task_id: str, generation: int, stats: TaskStats) -> pb.TaskStatus:
    return pb.TaskStatus(
        task_id=task_id,
        generation=generation,
        state=task_state_to_proto(stats.state),
        records_per_s=stats.records_per_s,
        bytes_per_s=stats.bytes_per_s,
        cpu_seconds_per_s=stats.cpu_seconds_per_s,
        consumer_lag=stats.consumer_lag,
        committed_offset=stats.committed_offset,
        last_error=stats.last_error,
        records_total=max(stats.records_total, 0),
        dead_letters_total=max(stats.dead_letters_total, 0),
        last_commit_age_s=stats.last_commit_age_s,
        freshness_s=stats.freshness_s,
        stalled=stats.stalled,
        bytes_total=max(stats.bytes_total, 0),
        exported_total=max(stats.exported_total, 0),
        rate_limited_s=stats.rate_limited_s,
    )


def assignment_from_proto(message: pb.TaskAssignment) -> Assignment:
    """Raises tasks.errors.ValidationError when spec_json is not a valid job spec."""
    return Assignment(
        task_id=message.task_id,
        generation=message.generation,
        job=job_spec_from_json(message.spec_json),
        partition=message.partition,
        job_tasks=message.job_tasks,
    )
