"""Between the A2A SDK's protobuf types and plain JSON values (docs/security-gateway.md).

A2A 1.0 carries data parts and metadata as ``google.protobuf.Struct``/``Value``, where every
number is a double: a number read back here is an ``int`` again when it is integral (JSON does
not tell ``2`` from ``2.0``, and a mesh's request model counts hops, say, in integers).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage

#: Beyond this a double no longer holds every integer exactly: leave it a float.
_EXACT = 2**53


def plain(value: Any) -> Any:
    """``value`` (from ``MessageToDict`` of a Struct or Value) with integral floats as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT:
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    found = plain(MessageToDict(struct))
    return found if isinstance(found, dict) else {}


def from_value(value: struct_pb2.Value) -> Any:
    return plain(MessageToDict(value))


def struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(data))
    return out


def value(data: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if isinstance(data, Mapping):
        out.struct_value.update(dict(data))
    elif isinstance(data, list | tuple):
        out.list_value.extend(list(data))
    elif data is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        out.bool_value = data
    elif isinstance(data, int | float):
        out.number_value = float(data)
    else:
        out.string_value = str(data)
    return out


def timestamp(text: Any) -> datetime:
    """An ISO 8601 time (naive is UTC); now when there is none or it does not parse."""
    try:
        found = datetime.fromisoformat(str(text)) if text else datetime.now(UTC)
    except ValueError:
        return datetime.now(UTC)
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def to_json(message: ProtoMessage) -> dict[str, Any]:
    """A protobuf message as its A2A JSON object (camelCase field names)."""
    found = plain(MessageToDict(message, preserving_proto_field_name=False))
    return found if isinstance(found, dict) else {}
