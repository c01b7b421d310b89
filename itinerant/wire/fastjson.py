"""JSON the runtime writes itself and reads back (outbox rows, step outputs it embeds, the
merged output of a join, span lines), through orjson: one C pass instead of the standard
library's, compact, always UTF-8 (docs/benchmarks.md#the-hot-path).

What a caller sends (requests, approval decisions, payloads a ``when`` filter reads) is still read
with the standard library, whose error messages the poison-message tests pin down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes."""
    return orjson.dumps(value)


def dumps_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``value`` as compact JSON text (``default`` turns anything else into something JSON)."""
    return orjson.dumps(value, default=default).decode()


def loads(raw: bytes | str) -> Any:
    """Parsed JSON; a ``ValueError`` (``json.JSONDecodeError``) when it is not JSON."""
    return orjson.loads(raw)
