"""Ingress: turn whatever arrived on the requests topic into a valid request, or a clear refusal.

Anyone may publish a bare JSON value with no headers (``kcat -P``); CloudEvents headers are used
when present. Ids: the saga id is the request's ``request_id``, else ``ce_sagaid``, else ``ce_id``,
else a stable id of the record's position, so a redelivery maps to the same saga. Headers are
bounded before anything is read (docs/security.md#bounded-inputs); an unusable id is never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from itinerant.errors import (
    ItinerantError,
    MessageTooLarge,
    SchemaViolation,
    UndecodableMessage,
    UnsupportedVersion,
    validation_problems,
)
from itinerant.wire.bounds import DEFAULT_BOUNDS, InputBounds
from itinerant.wire.envelope import InRecord, parse_type
from itinerant.wire.ids import name_id
from itinerant.wire.request import REQUEST_TYPE, Request

ACCEPTED_VERSIONS = frozenset({1})


@dataclass(frozen=True)
class Accepted:
    message_id: str
    saga_id: str
    request: Request
    traceparent: str | None
    tracestate: str | None


@dataclass(frozen=True)
class Refused:
    message_id: str
    saga_id: str
    error: ItinerantError


def _header(record: InRecord, name: str) -> str | None:
    raw = record.header(name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8") or None
    except UnicodeDecodeError:
        return None


def read_request(
    record: InRecord,
    max_bytes: int,
    model: type[Request] = Request,
    bounds: InputBounds = DEFAULT_BOUNDS,
) -> Accepted | Refused:
    position_id = name_id(record.topic, record.partition, record.offset)
    try:
        bounds.check_headers(record.headers)
    except ItinerantError as exc:  # read nothing more of it: answer under its position
        return Refused(position_id, position_id, exc)
    message_id = _usable_id(_header(record, "ce_id"), bounds) or position_id
    saga_header = _header(record, "ce_sagaid")
    fallback_saga = _usable_id(saga_header, bounds) or message_id
    try:
        if saga_header is not None:
            bounds.check_saga_id(saga_header)  # a ce_sagaid that is there must be usable
        request = _decode(record, max_bytes, model)
        if request.request_id:
            bounds.check_saga_id(request.request_id, "request_id")
    except ItinerantError as exc:
        client_id = _usable_id(_client_request_id(record, max_bytes), bounds)
        return Refused(message_id, client_id or fallback_saga, exc)
    return Accepted(
        message_id=message_id,
        saga_id=request.request_id or fallback_saga,
        request=request,
        traceparent=_header(record, "traceparent"),
        tracestate=_header(record, "tracestate"),
    )


def _usable_id(value: str | None, bounds: InputBounds) -> str | None:
    """``value`` if it can be an id (bounded, printable), else None."""
    if value is None or bounds.saga_id_problem(value) is not None:
        return None
    return value


def _client_request_id(record: InRecord, max_bytes: int) -> str | None:
    """The client's ``request_id`` from a request we refuse, so its answer is keyed by it."""
    if not record.value or len(record.value) > max_bytes:
        return None
    try:
        raw = json.loads(record.value)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(raw, dict):
        value = raw.get("request_id")
        if isinstance(value, str) and 0 < len(value) <= 100:
            return value
    return None


def _decode(record: InRecord, max_bytes: int, model: type[Request]) -> Request:
    ce_type = _header(record, "ce_type")
    if ce_type is not None:
        name, version = parse_type(ce_type)
        if name != REQUEST_TYPE or version not in ACCEPTED_VERSIONS:
            raise UnsupportedVersion(f"the requests topic takes {REQUEST_TYPE}.v1, got {ce_type!r}")
    value = record.value
    if not value:
        raise UndecodableMessage(
            "the request is empty",
            reason="empty_value",
            hint="publish a JSON object; see examples/requests/",
        )
    if len(value) > max_bytes:
        raise MessageTooLarge(
            f"the request is {len(value)} bytes; the limit is {max_bytes} "
            "(ITINERANT_MAX_MESSAGE_BYTES)"
        )
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UndecodableMessage(
            f"the request is not JSON: {exc}",
            reason="invalid_json",
            hint="publish a JSON object; see examples/requests/",
        ) from exc
    if not isinstance(raw, dict):
        raise SchemaViolation(
            f"the request must be a JSON object, not {type(raw).__name__}", reason="invalid_request"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise SchemaViolation(
            f"the request is not a valid {model.__name__}: "
            f"{validation_problems(exc, root='request')}",
            reason="invalid_request",
            hint="see schemas/itinerant.request.v1.json and examples/requests/",
        ) from exc
