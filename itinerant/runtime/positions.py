"""Where the record being handled sits in Kafka, for the inbox to remember with it.

The worker sets :data:`CURRENT` before it hands a record to its handler; the inbox
(runtime/bookkeeping.py) records it with the message id. Under exactly-once processing that is
what tells a redelivered record (its outputs were never committed: send them again) from a
second copy of a message at another offset (its first copy's outputs were committed with it:
send nothing). See docs/architecture.md#exactly-once-results.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int
    #: Handled inside a Kafka transaction that commits its outputs with its offset.
    transactional: bool = False

    def key(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


CURRENT: ContextVar[Position | None] = ContextVar("itinerant_position", default=None)
