from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_STARTING: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_DRAINING: _ClassVar[TaskState]
    TASK_STATE_STOPPED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_STARTING: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_DRAINING: TaskState
TASK_STATE_STOPPED: TaskState
TASK_STATE_FAILED: TaskState

class Resources(_message.Message):
    __slots__ = ("cpu_cores", "net_bytes_per_s")
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    NET_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: float
    net_bytes_per_s: float
    def __init__(self, cpu_cores: _Optional[float] = ..., net_bytes_per_s: _Optional[float] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("cpu_fraction", "net_in_bytes_per_s", "net_out_bytes_per_s", "memory_rss_bytes", "memory_total_bytes")
    CPU_FRACTION_FIELD_NUMBER: _ClassVar[int]
    NET_IN_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    NET_OUT_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_fraction: float
    net_in_bytes_per_s: float
    net_out_bytes_per_s: float
    memory_rss_bytes: int
    memory_total_bytes: int
    def __init__(self, cpu_fraction: _Optional[float] = ..., net_in_bytes_per_s: _Optional[float] = ..., net_out_bytes_per_s: _Optional[float] = ..., memory_rss_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "generation", "state", "records_per_s", "bytes_per_s", "cpu_seconds_per_s", "consumer_lag", "committed_offset", "last_error", "records_total", "dead_letters_total", "last_commit_age_s", "freshness_s", "stalled", "bytes_total", "exported_total", "rate_limited_s")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_PER_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_PER_S_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_LAG_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    RECORDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMIT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_S_FIELD_NUMBER: _ClassVar[int]
    STALLED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_S_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    generation: int
    state: TaskState
    records_per_s: float
    bytes_per_s: float
    cpu_seconds_per_s: float
    consumer_lag: int
    committed_offset: int
    last_error: str
    records_total: int
    dead_letters_total: int
    last_commit_age_s: float
    freshness_s: float
    stalled: str
    bytes_total: int
    exported_total: int
    rate_limited_s: float
    def __init__(self, task_id: _Optional[str] = ..., generation: _Optional[int] = ..., state: _Optional[_Union[TaskState, str]] = ..., records_per_s: _Optional[float] = ..., bytes_per_s: _Optional[float] = ..., cpu_seconds_per_s: _Optional[float] = ..., consumer_lag: _Optional[int] = ..., committed_offset: _Optional[int] = ..., last_error: _Optional[str] = ..., records_total: _Optional[int] = ..., dead_letters_total: _Optional[int] = ..., last_commit_age_s: _Optional[float] = ..., freshness_s: _Optional[float] = ..., stalled: _Optional[str] = ..., bytes_total: _Optional[int] = ..., exported_total: _Optional[int] = ..., rate_limited_s: _Optional[float] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("server_id", "group", "address", "capacity", "usage", "tasks", "seq", "highest_epoch_seen", "version", "labels", "sent_at_unix", "draining", "max_tasks")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_EPOCH_SEEN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    server_id: str
    group: str
    address: str
    capacity: Resources
    usage: Usage
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    seq: int
    highest_epoch_seen: int
    version: str
    labels: _containers.ScalarMap[str, str]
    sent_at_unix: float
    draining: bool
    max_tasks: int
    def __init__(self, server_id: _Optional[str] = ..., group: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ..., seq: _Optional[int] = ..., highest_epoch_seen: _Optional[int] = ..., version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., sent_at_unix: _Optional[float] = ..., draining: _Optional[bool] = ..., max_tasks: _Optional[int] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: Report
    def __init__(self, report: _Optional[_Union[Report, _Mapping]] = ...) -> None: ...

class TaskAssignment(_message.Message):
    __slots__ = ("task_id", "generation", "job_id", "topic", "partition", "spec_json", "incarnation", "job_tasks")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    JOB_TASKS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    generation: int
    job_id: str
    topic: str
    partition: int
    spec_json: bytes
    incarnation: int
    job_tasks: int
    def __init__(self, task_id: _Optional[str] = ..., generation: _Optional[int] = ..., job_id: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., spec_json: _Optional[bytes] = ..., incarnation: _Optional[int] = ..., job_tasks: _Optional[int] = ...) -> None: ...

class Directive(_message.Message):
    __slots__ = ("seq", "desired", "drain")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    seq: int
    desired: _containers.RepeatedCompositeFieldContainer[TaskAssignment]
    drain: bool
    def __init__(self, seq: _Optional[int] = ..., desired: _Optional[_Iterable[_Union[TaskAssignment, _Mapping]]] = ..., drain: _Optional[bool] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("report_seq", "lease_ttl_s", "heartbeat_interval_s")
    REPORT_SEQ_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    report_seq: int
    lease_ttl_s: float
    heartbeat_interval_s: float
    def __init__(self, report_seq: _Optional[int] = ..., lease_ttl_s: _Optional[float] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class Reregister(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class LeaderMessage(_message.Message):
    __slots__ = ("epoch", "ack", "directive", "reregister")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVE_FIELD_NUMBER: _ClassVar[int]
    REREGISTER_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    ack: Ack
    directive: Directive
    reregister: Reregister
    def __init__(self, epoch: _Optional[int] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., directive: _Optional[_Union[Directive, _Mapping]] = ..., reregister: _Optional[_Union[Reregister, _Mapping]] = ...) -> None: ...
