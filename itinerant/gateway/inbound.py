"""An A2A message -> a trip request, validated exactly as the coordinator's ingress does
(``TripRequest.model_validate``), with the caller's budget from ``metadata.itinerant``."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from a2a.types import DataPart, FilePart, Message, MessageSendParams, TextPart
from pydantic import ValidationError

from itinerant.errors import validation_problems
from services.contracts.trip import TripRequest

from .card import METADATA_KEY

MAX_HOPS = 100  # TripRequest.max_hops: le=100
MAX_DEADLINE_S = 3600.0  # TripRequest.deadline_s: le=3600
DEFAULT_TRAVELLER = "A2A client"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


class InvalidInput(ValueError):
    """The message cannot become a trip request; the text says what to send instead."""


def trip_request(params: MessageSendParams) -> TripRequest:
    """The trip request in ``params.message``; raises :class:`InvalidInput`."""
    options = _options(params)
    raw = _payload(params.message, options)
    budget = _budget(options)
    for name, value in budget.items():  # the most restrictive of the data and the metadata
        given = raw.get(name)
        if isinstance(given, int | float) and not isinstance(given, bool):
            raw[name] = min(given, value)
        elif given is None:
            raw[name] = value
    try:
        return TripRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(
            "the message is not a valid trip request: "
            f"{validation_problems(exc, root='request')} "
            "(see schemas/itinerant.request.v1.json and examples/requests/)"
        ) from exc


def _options(params: MessageSendParams) -> dict[str, Any]:
    """``metadata.itinerant`` of the request, then of the message (the message wins)."""
    merged: dict[str, Any] = {}
    for metadata in (params.metadata, params.message.metadata):
        if not metadata or METADATA_KEY not in metadata:
            continue
        value = metadata[METADATA_KEY]
        if not isinstance(value, dict):
            raise InvalidInput(f"metadata.{METADATA_KEY} must be an object")
        merged.update(value)
    unknown = sorted(set(merged) - {"max_hops", "deadline_s", "traveller"})
    if unknown:
        raise InvalidInput(
            f"unknown metadata.{METADATA_KEY} field(s) {unknown}; "
            "known: max_hops, deadline_s, traveller"
        )
    return merged


def _payload(message: Message, options: dict[str, Any]) -> dict[str, Any]:
    data = [p.root for p in message.parts if isinstance(p.root, DataPart)]
    texts = [p.root.text for p in message.parts if isinstance(p.root, TextPart)]
    if any(isinstance(p.root, FilePart) for p in message.parts):
        raise InvalidInput(
            "file parts are not accepted; send a data part (an itinerant.request.v1 object) "
            "or a text part"
        )
    if len(data) > 1:
        raise InvalidInput("send one data part (one trip request per task), not several")
    if data:
        return dict(data[0].data)
    text = "\n".join(t.strip() for t in texts if t.strip())
    if not text:
        raise InvalidInput(
            "the message has no content: send a data part with an itinerant.request.v1 object "
            "or a text part describing the trip"
        )
    if text.startswith("{"):  # a JSON request sent as text/plain
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"text": text, "traveller": _traveller(options.get("traveller"))}


def _traveller(value: Any) -> Any:
    if value is None:
        return {"name": DEFAULT_TRAVELLER}
    if isinstance(value, str):
        return {"name": value}
    return value  # an object: TripRequest validates it


def _budget(options: dict[str, Any]) -> dict[str, int | float]:
    budget: dict[str, int | float] = {}
    hops = options.get("max_hops")
    if hops is not None:
        if isinstance(hops, bool) or not isinstance(hops, int) or hops < 1:
            raise InvalidInput(f"metadata.{METADATA_KEY}.max_hops must be an integer >= 1")
        budget["max_hops"] = min(hops, MAX_HOPS)
    deadline = options.get("deadline_s")
    if deadline is not None:
        if (
            isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
            or not math.isfinite(deadline)
            or deadline <= 0
        ):
            raise InvalidInput(f"metadata.{METADATA_KEY}.deadline_s must be a number > 0")
        budget["deadline_s"] = min(float(deadline), MAX_DEADLINE_S)
    return budget


def traceparent(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The caller's W3C trace context, if well formed (a malformed one is dropped)."""
    parent = headers.get("traceparent", "").strip().lower()
    if not _TRACEPARENT.match(parent) or parent.startswith("ff"):
        return None, None
    state = headers.get("tracestate", "").strip()
    return parent, (state[:512] or None)
