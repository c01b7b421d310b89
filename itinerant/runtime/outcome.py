"""``Processed``: what handling one record produced, and what the worker must send for it.

Every stage of the per-message pipeline returns one, and so does the coordinator; the worker
sends ``outputs`` and only then lets the consumer move on (see
docs/architecture.md#the-per-message-pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from itinerant.errors import ItinerantError
from itinerant.wire.envelope import OutMessage


@dataclass
class Processed:
    """What handling one record produced."""

    outcome: str
    outputs: list[OutMessage] = field(default_factory=list)
    outbox_seqs: list[int] = field(default_factory=list)
    error: ItinerantError | None = None
