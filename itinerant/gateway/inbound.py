"""An A2A message -> the mesh's request, validated exactly as the coordinator's ingress does
(``mesh.request_model.model_validate``), with the caller's budget from ``metadata.itinerant``.

What a message may hold:

- one data part: the request object itself (``itinerant.request.v1``, the mesh's request model);
- text parts: a JSON object sent as text/plain is read as the request; any other text is the
  ask in plain words, which ``mesh.from_text(text, options)`` turns into the raw request (a mesh
  without ``from_text`` refuses it);
- no file parts.

``metadata.itinerant`` (of the request, then of the message; the message wins) may hold
``max_hops`` and ``deadline_s``, which lower the request's budget (never raise it; capped at the
request model's limits). When the mesh reads text, any other field is accepted and handed to
``from_text`` as an option (the whole ``metadata.itinerant`` object is its ``options``); a mesh
that reads no text accepts only the budget fields.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from a2a.types import Message, SendMessageRequest
from pydantic import BaseModel, ValidationError

from itinerant.errors import validation_problems
from itinerant.mesh import Mesh
from itinerant.wire.request import Request

from .config import METADATA_KEY
from .proto import from_struct, from_value

BUDGET_FIELDS = ("max_hops", "deadline_s")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


class InvalidInput(ValueError):
    """The message cannot become a request; the text says what to send instead."""


def _upper_bound(model: type[BaseModel], name: str, default: float) -> float:
    field = model.model_fields.get(name)
    for constraint in field.metadata if field is not None else ():
        bound = getattr(constraint, "le", None)
        if isinstance(bound, int | float) and not isinstance(bound, bool):
            return bound
    return default


def limits(model: type[Request] = Request) -> tuple[int, float]:
    """The highest ``max_hops`` and ``deadline_s`` the request model takes."""
    return (
        int(_upper_bound(model, "max_hops", 100)),
        float(_upper_bound(model, "deadline_s", 3600.0)),
    )


MAX_HOPS, MAX_DEADLINE_S = limits()  # itinerant.Request: max_hops le=100, deadline_s le=3600


def read_request(params: SendMessageRequest, mesh: Mesh) -> Request:
    """The mesh's request in ``params.message``; raises :class:`InvalidInput`."""
    options = _options(params, mesh)
    raw = _payload(params.message, options, mesh)
    budget = _budget(options, mesh.request_model)
    for name, value in budget.items():  # the most restrictive of the data and the metadata
        given = raw.get(name)
        if isinstance(given, int | float) and not isinstance(given, bool):
            raw[name] = min(given, value)
        elif given is None:
            raw[name] = value
    try:
        return mesh.request_model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(
            f"the message is not a valid {mesh.name} request: "
            f"{validation_problems(exc, root='request')} "
            "(see schemas/itinerant.request.v1.json and examples/requests/)"
        ) from exc


def _options(params: SendMessageRequest, mesh: Mesh) -> dict[str, Any]:
    """``metadata.itinerant`` of the request, then of the message (the message wins)."""
    merged: dict[str, Any] = {}
    for metadata in (from_struct(params.metadata), from_struct(params.message.metadata)):
        if METADATA_KEY not in metadata:
            continue
        value = metadata[METADATA_KEY]
        if not isinstance(value, dict):
            raise InvalidInput(f"metadata.{METADATA_KEY} must be an object")
        merged.update(value)
    unknown = sorted(set(merged) - set(BUDGET_FIELDS))
    if unknown and mesh.from_text is None:
        raise InvalidInput(
            f"unknown metadata.{METADATA_KEY} field(s) {unknown}; known: "
            f"{', '.join(BUDGET_FIELDS)} (the {mesh.name} mesh reads no other option)"
        )
    return merged


def _payload(message: Message, options: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    kinds = [p.WhichOneof("content") for p in message.parts]
    data = [
        from_value(p.data) for p, kind in zip(message.parts, kinds, strict=True) if kind == "data"
    ]
    texts = [p.text for p, kind in zip(message.parts, kinds, strict=True) if kind == "text"]
    if any(kind in ("raw", "url") for kind in kinds):
        raise InvalidInput(
            "file parts are not accepted; send a data part (an itinerant.request.v1 object) "
            "or a text part"
        )
    if len(data) > 1:
        raise InvalidInput("send one data part (one request per task), not several")
    if data:
        if not isinstance(data[0], dict):
            raise InvalidInput(
                "the data part must hold an object (an itinerant.request.v1 request), not "
                f"{type(data[0]).__name__}"
            )
        return dict(data[0])
    text = "\n".join(t.strip() for t in texts if t.strip())
    if not text:
        raise InvalidInput(
            "the message has no content: send a data part with an itinerant.request.v1 object "
            "or a text part"
        )
    if text.startswith("{"):  # a JSON request sent as text/plain
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    if mesh.from_text is None:
        raise InvalidInput(
            f"the {mesh.name} mesh does not read requests in plain words; send a data part "
            "(or a text part) holding an itinerant.request.v1 JSON object"
        )
    try:
        raw = mesh.from_text(text, dict(options))
    except ValueError as exc:
        raise InvalidInput(f"the text cannot become a {mesh.name} request: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"the text cannot become a {mesh.name} request (its reading gave "
            f"{type(raw).__name__}, not an object)"
        )
    return dict(raw)


def _budget(options: dict[str, Any], model: type[Request] = Request) -> dict[str, int | float]:
    max_hops, max_deadline_s = limits(model)
    budget: dict[str, int | float] = {}
    hops = options.get("max_hops")
    if hops is not None:
        if isinstance(hops, bool) or not isinstance(hops, int) or hops < 1:
            raise InvalidInput(f"metadata.{METADATA_KEY}.max_hops must be an integer >= 1")
        budget["max_hops"] = min(hops, max_hops)
    deadline = options.get("deadline_s")
    if deadline is not None:
        if (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not math.isfinite(deadline)
            or deadline <= 0
        ):
            raise InvalidInput(f"metadata.{METADATA_KEY}.deadline_s must be a number > 0")
        budget["deadline_s"] = min(float(deadline), max_deadline_s)
    return budget


def traceparent(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The caller's W3C trace context, if well formed (a malformed one is dropped)."""
    parent = headers.get("traceparent", "").strip().lower()
    if not _TRACEPARENT.match(parent) or parent.startswith("ff"):
        return None, None
    state = headers.get("tracestate", "").strip()
    return parent, (state[:512] or None)
