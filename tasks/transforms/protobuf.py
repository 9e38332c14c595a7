"""Decoding Protobuf values of the schema registry's wire format with protobuf's own runtime, from
the schema the registry holds (a serialized FileDescriptorProto), without generated code.

After the 5-byte header (magic byte, schema id) a Protobuf value carries the index path of its
message type in the file: a zigzag varint count, then that many zigzag varint indexes (a single
0 byte is the common case: the file's first message). Records become dicts with every field of
the message (proto3 scalars without presence at their default, an unset message field None):
int64 stays an int, bytes stay bytes (base64 text for NDJSON and CSV, as Protobuf's JSON mapping
writes them), enums are their names, maps are dicts, repeated fields
lists; so every record of a message type has the same fields, and typed files get stable columns.

The registry must hold the serialized form (what confluent-kafka's serializers register, and
what Confluent's registry returns with `?format=serialized`); a schema kept as .proto text is a
dead letter naming that. Imports of the well-known types (google/protobuf/*.proto) resolve from
the runtime's own pool; references to other registry subjects are not followed (a dead letter).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from tasks.errors import RecordError

Decode = Callable[[bytes], Any]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise RecordError("Protobuf message index is cut short")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos   # zigzag
        shift += 7


def message_indexes(payload: bytes) -> tuple[list[int], int]:
    """The index path of the value's message type and where the message starts."""
    count, pos = _varint(payload, 0)
    if count == 0:
        return [0], pos
    if not 0 < count <= 64:
        raise RecordError(f"Protobuf message index count {count} is not plausible")
    indexes = []
    for _ in range(count):
        index, pos = _varint(payload, pos)
        indexes.append(index)
    return indexes, pos


def _file_proto(schema_text: str) -> descriptor_pb2.FileDescriptorProto:
    try:
        raw = base64.b64decode(schema_text, validate=True)
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
    except (binascii.Error, ValueError, DecodeError) as exc:
        raise RecordError("the registry holds this Protobuf schema as .proto text; exportd "
                          "reads the serialized form (register it with confluent-kafka's "
                          "serializer, or use a registry that serves ?format=serialized)") from exc
    if not proto.message_type:
        raise RecordError("the Protobuf schema defines no message")
    return proto


def _pool_with(proto: descriptor_pb2.FileDescriptorProto) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    default = descriptor_pool.Default()
    for dependency in proto.dependency:
        if not dependency.startswith("google/protobuf/"):
            raise RecordError(f"the Protobuf schema imports {dependency!r}: references to "
                              "other subjects are not supported")
        try:
            __import__(f"google.protobuf.{dependency.rsplit('/', 1)[-1][:-6]}_pb2")
            known = descriptor_pb2.FileDescriptorProto()
            default.FindFileByName(dependency).CopyToProto(known)
        except (ImportError, KeyError) as exc:
            raise RecordError(f"unknown well-known Protobuf file {dependency!r}") from exc
        pool.Add(known)
    pool.Add(proto)
    return pool


def _value(field: Any, value: Any, as_text: bool) -> Any:
    """`field`: a FieldDescriptor (the upb runtime's or the Python one: typed Any)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_record(value, bytes_as_text=as_text)
    if as_text and field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    return value


def to_record(message: Message, *, bytes_as_text: bool = True) -> dict[str, Any]:
    """Every field of the message, by its proto name (see the module docstring). bytes as
    base64 text when `bytes_as_text` (Protobuf's JSON mapping; for NDJSON and CSV)."""
    t = bytes_as_text
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {key: _value(value_field, item, t) for key, item in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, item, t) for item in value]
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value, t)
    return out


def protobuf_decoder(schema_text: str, *, bytes_as_text: bool = True) -> Decode:
    """Decode one value's payload (after the 5-byte header: message indexes, then the message)."""
    proto = _file_proto(schema_text)
    pool = _pool_with(proto)
    package = f"{proto.package}." if proto.package else ""
    classes: dict[tuple[int, ...], type[Message]] = {}

    def message_class(indexes: list[int]) -> type[Message]:
        key = tuple(indexes)
        found = classes.get(key)
        if found is None:
            try:
                descriptor: Descriptor = pool.FindMessageTypeByName(
                    package + proto.message_type[indexes[0]].name)
                for index in indexes[1:]:
                    descriptor = descriptor.nested_types[index]
            except IndexError as exc:
                raise RecordError(f"no Protobuf message at index path {indexes}") from exc
            found = classes[key] = message_factory.GetMessageClass(descriptor)
        return found

    def decode(payload: bytes) -> Any:
        indexes, start = message_indexes(payload)
        cls = message_class(indexes)
        try:
            message = cls.FromString(payload[start:])
        except DecodeError as exc:
            raise RecordError(f"does not decode as {cls.DESCRIPTOR.full_name}: {exc}") from exc
        return to_record(message, bytes_as_text=bytes_as_text)

    return decode
