"""Reading requests from files, stdin or flags, with errors that say what to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from itinerant.wire.request import Request


class RequestError(ValueError):
    pass


def load_request(text: str, where: str, model: type[Request]) -> Request:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RequestError(f"{where} is not JSON: {exc}") from exc
    return validate_request(raw, where, model)


def validate_request(raw: Any, where: str, model: type[Request]) -> Request:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        raise RequestError(
            f"{where} is not a valid request:\n{problems}\n"
            "See schemas/itinerant.request.v1.json and examples/requests/."
        ) from exc


def request_from_fields(fields: list[str], model: type[Request]) -> Request:
    """A request from ``key=value`` pairs: a dotted key sets a nested field
    (``customer.name=Ada``); a value that reads as JSON is taken as JSON (``quantity=2``,
    ``limit_usd=900.5``), any other as text."""
    raw: dict[str, Any] = {}
    for field in fields:
        key, sep, text = field.partition("=")
        if not sep or not key:
            raise RequestError(f"--field {field!r} is not key=value (e.g. --field origin=MAD)")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.split(".")
        target = raw
        for parent in parents:
            child = target.setdefault(parent, {})
            if not isinstance(child, dict):
                raise RequestError(f"--field {field!r}: {parent!r} is set to a value already")
            target = child
        target[leaf] = value
    return validate_request(raw, "the --field values", model)


def read_source(source: str) -> tuple[str, str]:
    if source == "-":
        import sys

        return sys.stdin.read(), "stdin"
    path = Path(source)
    if not path.exists():
        raise RequestError(f"{source}: no such file (give a JSON request file, or - for stdin)")
    return path.read_text(), str(path)
