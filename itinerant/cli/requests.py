"""Reading requests from files, stdin or flags, with errors that say what to fix."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.contracts.trip import TripRequest


class RequestError(ValueError):
    pass


def load_request(text: str, where: str) -> TripRequest:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RequestError(f"{where} is not JSON: {exc}") from exc
    return validate_request(raw, where)


def validate_request(raw: Any, where: str) -> TripRequest:
    try:
        return TripRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        raise RequestError(
            f"{where} is not a valid request:\n{problems}\n"
            "See schemas/itinerant.request.v1.json and examples/requests/."
        ) from exc


def request_from_flags(
    *,
    traveller: str | None,
    origin: str | None,
    destination: str | None,
    depart: date | None,
    return_: date | None,
    text: str | None,
    travellers: int,
    budget: float | None,
) -> TripRequest:
    raw: dict[str, Any] = {
        "traveller": {"name": traveller or "Anonymous"},
        "travellers": travellers,
    }
    for key, value in (
        ("origin", origin),
        ("destination", destination),
        ("depart_date", depart.isoformat() if depart else None),
        ("return_date", return_.isoformat() if return_ else None),
        ("text", text),
        ("budget_usd", budget),
    ):
        if value is not None:
            raw[key] = value
    return validate_request(raw, "the flags")


def read_source(source: str) -> tuple[str, str]:
    if source == "-":
        import sys

        return sys.stdin.read(), "stdin"
    path = Path(source)
    if not path.exists():
        raise RequestError(f"{source}: no such file (try examples/requests/trip.json)")
    return path.read_text(), str(path)
