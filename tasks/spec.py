"""The job spec: what ops submit, what the master validates and stores, what a server runs.

One pydantic model serves all three: the master's API validates request bodies with it (and
serves its JSON schema in the OpenAPI document), ZooKeeper stores its JSON, and each
`TaskAssignment.spec_json` in a directive carries it to the server. Unknown fields are errors,
JMESPath expressions and regexes are compiled at validation time, sizes must be positive, and
`parse_job_spec` turns every problem into a `ValidationError` naming the field path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tasks.errors import ConfigError, ValidationError
from tasks.expressions import check_jmespath, compile_regex, compile_topic_pattern
from tasks.iceberg.spec import IcebergSink
from tasks.settings import Duration

JOB_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
GROUP = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
# Kafka's own rule for topic names.
TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
# `${env:EXPORTD_SECRET_...}` in an HTTP header's value: replaced on the server that runs the
# task, from its environment (tasks/sinks/http.py), so the secret is neither stored in ZooKeeper
# nor shown by the API. Only that prefix: a job may not send a server's other variables away.
SECRET_REF = re.compile(r"\$\{([^}]*)\}")
SECRET_VAR = re.compile(r"^env:(EXPORTD_SECRET_[A-Z0-9_]+)$")


def resolve_secret_refs(text: str, environ: Mapping[str, str], *, what: str,
                        **context: str) -> str:
    """`text` with every `${env:EXPORTD_SECRET_...}` replaced from `environ` (the spec's
    validators let no other reference through); ConfigError naming `what` and the variable when
    one is not set on this server."""
    def secret(ref: re.Match[str]) -> str:
        var = SECRET_VAR.match(ref[1])
        assert var is not None
        if var[1] not in environ:
            raise ConfigError(f"{what} refers to {var[1]}, which is not set on this server",
                              **context, variable=var[1])
        return environ[var[1]]
    return SECRET_REF.sub(secret, text)


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Validation context of a spec that was stored (ZooKeeper) or sent (a directive): it passed the
# checks of the version that stored it. Checks added later (RE2 patterns, JMESPath bounds) are
# not applied again here, so an older job stays visible and deletable instead of vanishing from
# the leader's view; its tasks fail with the reason when they compile the expression.
STORED = {"stored": True}


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def _check_jmespath(value: str | None, info: ValidationInfo) -> str | None:
    if value is None or _stored(info):
        return value
    check_jmespath(value)   # bounded in size and depth; ValueError with the reason
    return value


class LoadHint(SpecModel):
    """Expected load of one task of the job, used until the task has been measured."""

    cpu: float = Field(ge=0, description="CPU seconds per second")
    net: float = Field(ge=0, description="network bytes per second")


def _check_topic(value: str) -> str:
    if not TOPIC.match(value):
        raise ValueError("a Kafka topic name is 1-249 characters of [a-zA-Z0-9._-]")
    return value


class Source(SpecModel):
    # Exactly one of: one topic, a list of topics, or a pattern (RE2, matching a whole topic
    # name). A pattern's topics, and topics of the list created later, get tasks when the leader
    # next checks the cluster (master/partitions.py, tasks/topics.py). "" means not set: the
    # field stays a plain str for the code that reads single-topic jobs.
    topic: str = ""
    topics: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    topic_pattern: str | None = Field(default=None, min_length=1)
    # None: the server's configured Kafka cluster.
    bootstrap_servers: str | None = None
    # Where to start when the consumer group has no committed offset for the partition.
    start: Literal["earliest", "latest", "timestamp"] = "earliest"
    start_timestamp_ms: int | None = Field(default=None, ge=0)
    # Offsets are committed under this group; default `exportd-<job id>`.
    consumer_group: str | None = None
    batch_size: int = Field(default=1000, gt=0, le=100_000)

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return value if value == "" else _check_topic(value)

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for name in value:
                _check_topic(name)
            twice = sorted({name for name in value if value.count(name) > 1})
            if twice:
                raise ValueError(f"topic {twice[0]!r} is listed twice")
        return value

    @field_validator("topic_pattern")
    @classmethod
    def _topic_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            compile_topic_pattern(value)   # RE2: ValueError naming what cannot run in linear time
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Source:
        given = [self.topic != "", self.topics is not None, self.topic_pattern is not None]
        if sum(given) == 0:
            raise ValueError("a source needs one of topic, topics or topic_pattern")
        if sum(given) > 1:
            raise ValueError("give only one of topic, topics or topic_pattern")
        return self

    def named_topics(self) -> list[str]:
        """The topics named in the spec (none for a pattern)."""
        return [self.topic] if self.topic else list(self.topics or ())

    @model_validator(mode="after")
    def _timestamp(self) -> Source:
        if self.start == "timestamp" and self.start_timestamp_ms is None:
            raise ValueError("start: 'timestamp' needs start_timestamp_ms")
        return self


class Registry(SpecModel):
    """A Confluent-compatible schema registry (Confluent's, Apicurio's `/apis/ccompat/v7`,
    Karapace, Redpanda's): where `avro` and `json_schema` values' schema ids are looked up."""

    url: str
    username: str | None = None
    # Only as `${env:EXPORTD_SECRET_<NAME>}`, set on the servers: the spec is stored and shown.
    password: str | None = None
    # Schemas kept per worker process (by id); the registry is asked once per id, not per record.
    cache_size: int = Field(default=1000, gt=0, le=100_000)
    timeout: Duration = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
            raise ValueError("url must be http(s)://host[:port][/path], e.g. "
                             "https://registry:8081 or http://apicurio:8080/apis/ccompat/v7")
        return value.rstrip("/")

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        if value is not None:
            ref = SECRET_REF.fullmatch(value)
            if ref is None or not SECRET_VAR.match(ref[1]):
                raise ValueError("password must be a secret reference "
                                 "${env:EXPORTD_SECRET_<NAME>}, set on the servers")
        return value


class Parse(SpecModel):
    format: Literal["json", "nginx", "regex", "raw", "avro", "json_schema", "protobuf"] = "raw"
    # For format 'regex': a pattern with named groups; each group becomes a field.
    pattern: str | None = None
    # For 'avro', 'json_schema' and 'protobuf': values in the Confluent wire format (magic
    # byte 0, a 4-byte schema id, the payload), schemas looked up by id in this registry.
    registry: Registry | None = None
    # For 'avro' without a registry: the writer schema (Avro JSON) of every value (plain Avro
    # binary, no header).
    avro_schema: str | None = None

    @model_validator(mode="after")
    def _schemas(self) -> Parse:
        if self.format == "avro":
            if (self.registry is None) == (self.avro_schema is None):
                raise ValueError("format 'avro' needs either a registry or an avro_schema")
            if self.avro_schema is not None:
                from tasks.transforms.schemas import check_avro_schema
                check_avro_schema(self.avro_schema)   # ValueError with the reason
        elif self.format in ("json_schema", "protobuf"):
            if self.registry is None or self.avro_schema is not None:
                raise ValueError(f"format {self.format!r} needs a registry (and no avro_schema)")
        elif self.registry is not None or self.avro_schema is not None:
            raise ValueError(f"registry and avro_schema apply only to formats 'avro', "
                             f"'json_schema' and 'protobuf', not {self.format!r}")
        return self

    @model_validator(mode="after")
    def _pattern(self, info: ValidationInfo) -> Parse:
        if self.format == "regex":
            if not self.pattern:
                raise ValueError("format 'regex' needs a pattern with named groups")
            if not _stored(info):
                # RE2 (linear time); ValueError naming a backreference, lookaround, no group
                compile_regex(self.pattern)
        elif self.pattern is not None:
            raise ValueError(f"pattern applies only to format 'regex', not {self.format!r}")
        return self


class AddFields(SpecModel):
    ingest_time: bool = False       # adds `_ingest_time` (ISO 8601, UTC)
    source: bool = False            # adds `_topic`, `_partition`, `_offset`, `_timestamp`
    static: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Transform(SpecModel):
    parse: Parse = Parse()
    where: str | None = None        # JMESPath; records for which it is falsy are dropped
    select: str | None = None       # JMESPath projection producing the output record
    sample: float = Field(default=1.0, gt=0, le=1)
    add_fields: AddFields = AddFields()

    _where = field_validator("where")(_check_jmespath)
    _select = field_validator("select")(_check_jmespath)


# The compression levels a job may choose; None takes the default (gzip 6, zstd 3).
COMPRESSION_LEVELS = {"gzip": range(1, 10), "zstd": range(1, 20)}


class Format(SpecModel):
    # parquet and avro: typed columns from all the file's records (tasks/formats.py).
    type: Literal["ndjson", "csv", "parquet", "avro"] = "ndjson"
    compression: Literal["none", "gzip", "zstd"] = "none"
    # Lower is cheaper in CPU, higher writes smaller files: gzip 1-9 (default 6; zlib-ng at 3
    # costs under half the CPU of 6 for files ~5 % larger, at 1 a fifth for ~55 % larger), zstd
    # 1-19 (default 3).
    compression_level: int | None = None
    # CSV: the columns, in order (required for csv).
    columns: list[str] | None = None

    @model_validator(mode="after")
    def _columns(self) -> Format:
        if self.type == "csv" and not self.columns:
            raise ValueError("csv needs columns: the field names, in order")
        if self.compression_level is not None:
            levels = COMPRESSION_LEVELS.get(self.compression)
            if levels is None:
                raise ValueError("compression_level needs compression gzip or zstd")
            if self.compression_level not in levels:
                raise ValueError(f"{self.compression} compression_level must be "
                                 f"{levels.start}-{levels.stop - 1}")
        return self


class Rotation(SpecModel):
    """A file closes when any limit is reached. `max_records` and `max_bytes` depend only on the
    data (exactly-once rewrites); `max_seconds` is wall-clock (see docs: delivery)."""

    max_records: int | None = Field(default=10_000, gt=0)
    max_bytes: int | None = Field(default=64 * 1024 * 1024, gt=0)
    max_seconds: Duration | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> Rotation:
        if self.max_records is None and self.max_bytes is None and self.max_seconds is None:
            raise ValueError("rotation needs at least one of max_records, max_bytes, max_seconds")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        return self


class Partitioning(SpecModel):
    """Directories from what records hold (tasks/partitioning.py). With it, or with a
    `{field:<expr>}` in `path`, the records of one file go to their own directories: {dt} and
    {hour} come from each record's event time (`time_field`), `{field:customer.region}` from the
    exported record (a JMESPath of dotted names and indexes)."""

    # JMESPath to the event time in the exported record. None: the Kafka timestamp.
    time_field: str | None = None
    # epoch_ms, epoch_s, iso8601 (e.g. 2026-12-05T10:00:00Z), or a strptime pattern with '%'.
    time_format: str = "iso8601"
    # {dt} and {hour} in this IANA time zone.
    time_zone: str = "UTC"
    # A record whose event time is older than its Kafka timestamp minus this is late: it goes
    # below `late_prefix` (then its own path). None: no record is late.
    lateness: Duration | None = None
    late_prefix: str = Field(default="late", pattern=r"^[A-Za-z0-9_=.-]+$")

    @field_validator("time_format")
    @classmethod
    def _time_format(cls, value: str) -> str:
        if value not in ("epoch_ms", "epoch_s", "iso8601") and "%" not in value:
            raise ValueError("time_format: epoch_ms, epoch_s, iso8601 or a strptime pattern")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        import zoneinfo
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    _time_field = field_validator("time_field")(_check_jmespath)


def _check_path_template(value: str) -> str:
    from tasks.partitioning import check_template
    check_template(value)   # ValueError naming the field
    return value


class S3Sink(SpecModel):
    type: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    # Object path template below the prefix; may use {topic}, {partition}, record-time fields
    # {dt} (YYYY-MM-DD) and {hour} (HH), and {field:<expr>} (see Partitioning). File names are
    # always <topic>+<partition>+<start offset, zero-padded>.<ext>.
    path: str = "{topic}/partition={partition}"
    # None: the server's configured S3 endpoint (or AWS).
    endpoint_url: str | None = None
    region: str | None = None
    multipart_threshold_bytes: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Server-side encryption of every object: "AES256" (S3-managed keys) or "aws:kms" (with
    # kms_key_id, else the account's default KMS key). None: the bucket's default encryption.
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = Field(default=None, min_length=1)
    # None: the bucket's default (STANDARD).
    storage_class: Literal["STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                           "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR",
                           "OUTPOSTS", "EXPRESS_ONEZONE"] | None = None
    partitioning: Partitioning | None = None

    _path = field_validator("path")(_check_path_template)

    @model_validator(mode="after")
    def _kms(self) -> S3Sink:
        if self.kms_key_id is not None and self.server_side_encryption != "aws:kms":
            raise ValueError("kms_key_id needs server_side_encryption: aws:kms")
        return self


class HttpSink(SpecModel):
    type: Literal["http"] = "http"
    url: pydantic.AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0
    max_retries: int = Field(default=8, ge=0, le=100)
    batch_records: int = Field(default=500, gt=0, le=100_000)

    @field_validator("headers")
    @classmethod
    def _secret_refs(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            for ref in SECRET_REF.findall(value):
                if not SECRET_VAR.match(ref):
                    raise ValueError(f"header {name}: ${{{ref}}} is not a secret reference; "
                                     "use ${env:EXPORTD_SECRET_<NAME>}, set on the servers")
        return headers


class FileSink(SpecModel):
    type: Literal["file"] = "file"
    directory: str = Field(min_length=1)
    path: str = "{topic}/partition={partition}"
    partitioning: Partitioning | None = None

    _path = field_validator("path")(_check_path_template)


class KafkaSink(SpecModel):
    type: Literal["kafka"] = "kafka"
    topic: str
    bootstrap_servers: str | None = None

    _topic = field_validator("topic")(_check_topic)


Sink = Annotated[S3Sink | HttpSink | FileSink | KafkaSink | IcebergSink,
                 Field(discriminator="type")]


class DeadLetter(SpecModel):
    """Where records that fail go, each with its reason. Default: a Kafka topic
    `<job id>.dlq` on the source cluster."""

    type: Literal["kafka", "file"] = "kafka"
    topic: str | None = None
    directory: str | None = None

    @model_validator(mode="after")
    def _where(self) -> DeadLetter:
        if self.type == "file" and not self.directory:
            raise ValueError("a file dead-letter needs a directory")
        return self


class RateLimit(SpecModel):
    """The most a job reads, over all its tasks; each task gets an even share
    (tasks/ratelimit.py). Either or both; None: that dimension is not limited."""

    records_per_s: float | None = Field(default=None, gt=0)
    bytes_per_s: float | None = Field(default=None, gt=0, description="consumed value bytes/s")

    @model_validator(mode="after")
    def _some_rate(self) -> RateLimit:
        if self.records_per_s is None and self.bytes_per_s is None:
            raise ValueError("rate_limit needs records_per_s, bytes_per_s or both")
        return self


class JobSpec(SpecModel):
    id: str
    group: str = "default"
    state: Literal["running", "paused"] = "running"
    load_hint: LoadHint | None = None
    rate_limit: RateLimit | None = None
    source: Source
    transform: Transform = Transform()
    sink: Sink
    format: Format = Format()
    rotation: Rotation = Rotation()
    dead_letter: DeadLetter = DeadLetter()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not JOB_ID.match(value):
            raise ValueError("a job id is 1-63 characters of [a-z0-9-], not starting or ending "
                             "with '-'")
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not GROUP.match(value):
            raise ValueError("a group is 1-63 characters of [a-z0-9_-]")
        return value

    @model_validator(mode="before")
    @classmethod
    def _iceberg_format(cls, data: Any) -> Any:
        """An Iceberg table's data files are Parquet with zstd (tasks/sinks/iceberg.py): that
        is the format when a job leaves it out, and any other is refused."""
        if not isinstance(data, dict) or not isinstance(data.get("sink"), dict):
            return data
        if data["sink"].get("type") != "iceberg":
            return data
        fmt = data.get("format")
        if fmt is None:
            return {**data, "format": {"type": "parquet", "compression": "zstd"}}
        if isinstance(fmt, dict) and fmt.get("type", "parquet") != "parquet":
            raise ValueError("an iceberg sink writes Parquet data files: leave format out or "
                             "give format.type: parquet")
        if isinstance(fmt, dict) and "type" not in fmt:
            return {**data, "format": {**fmt, "type": "parquet"}}
        return data

    @model_validator(mode="after")
    def _partitioned_format(self) -> JobSpec:
        sink = self.sink
        if (isinstance(sink, S3Sink | FileSink) and self.format.type == "csv"
                and (sink.partitioning is not None or "{field:" in sink.path)):
            raise ValueError("sink.path with {field:...} or sink.partitioning needs format "
                             "ndjson, parquet or avro (a CSV line cannot be read back into a "
                             "record's fields)")
        return self

    @property
    def consumer_group(self) -> str:
        return self.source.consumer_group or f"exportd-{self.id}"

    @property
    def dead_letter_topic(self) -> str:
        return self.dead_letter.topic or f"{self.id}.dlq"

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def parse_job_spec(data: Any) -> JobSpec:
    """Validate a decoded job spec (dict). Every problem is a ValidationError whose `field` is
    the dotted path of the first bad field and whose details list all of them."""
    try:
        return JobSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]),
             "reason": err["msg"].removeprefix("Value error, ")}
            for err in exc.errors()
        ]
        first = problems[0]
        raise ValidationError(first["reason"], field=first["field"], problems=problems) from exc


def job_spec_from_json(raw: bytes | str) -> JobSpec:
    """Decode a stored or transmitted spec (ZooKeeper node, directive's spec_json)."""
    try:
        return JobSpec.model_validate_json(raw, context=STORED)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"stored job spec is invalid: {exc}") from exc


def job_json_schema() -> dict[str, Any]:
    """The JSON schema of a job spec, for the OpenAPI document."""
    return JobSpec.model_json_schema()
