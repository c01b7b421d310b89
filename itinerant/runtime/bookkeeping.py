"""The inbox and outbox rows every state store keeps, in the portable SQL of ``Database``, so
the SQLite store and the PostgreSQL store (`store.py`, `store_postgres.py`) keep them the same
way (docs/architecture.md#delivery-guarantees). Each store adds its own locking, transactions
and reconnection around these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from itinerant.runtime import positions
from itinerant.wire import fastjson
from itinerant.wire.envelope import OutMessage

if TYPE_CHECKING:
    from itinerant.runtime.store import Database


#: The inbox column added for exactly-once processing (runtime/positions.py); older stores get
#: it when they open, and their rows, without it, keep the at-least-once answer.
SOURCE_COLUMN = "source"


def recorded_outputs(db: Database, message_id: str) -> list[OutMessage] | None:
    """The outputs recorded for an already-processed message, or ``None`` if it is new.

    Handled transactionally, a copy at another position than the one recorded gets none: the
    first copy's outputs were committed with its offset, or that record comes again first."""
    row = db.execute(
        "SELECT outputs, source FROM inbox WHERE message_id = ?", (message_id,)
    ).fetchone()
    if row is None:
        return None
    here = positions.CURRENT.get()
    if here is not None and here.transactional and row["source"] not in (None, here.key()):
        return []
    return [OutMessage.from_json(item) for item in fastjson.loads(row["outputs"])]


def record(db: Database, message_id: str | None, outputs: Sequence[OutMessage]) -> list[int]:
    """Inside a transaction: mark ``message_id`` processed and queue ``outputs``; their outbox
    sequence numbers.

    Outputs of a record handled transactionally are queued already sent: its Kafka transaction
    delivers them with its offset, and if that transaction fails the record comes again. Only
    outputs without such a record (timers, operators) wait in the outbox for a later run."""
    here = positions.CURRENT.get()
    encoded = [m.to_json() for m in outputs]
    if message_id is not None:
        db.execute(
            "INSERT INTO inbox(message_id, processed_at, outputs, source) VALUES (?, ?, ?, ?)",
            (message_id, time.time(), fastjson.dumps_text(encoded), here.key() if here else None),
        )
    sent = 1 if here is not None and here.transactional else 0
    insert = "INSERT INTO outbox(message, sent) VALUES (?, ?) RETURNING seq"
    return [int(db.execute(insert, (item, sent)).fetchone()[0]) for item in encoded]


def unsent(db: Database, limit: int) -> list[tuple[int, OutMessage]]:
    """The oldest ``limit`` outputs not yet marked sent."""
    rows = db.execute(
        "SELECT seq, message FROM outbox WHERE sent = 0 ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    return [(int(r["seq"]), OutMessage.from_json(r["message"])) for r in rows]


def prune(db: Database, older_than_s: float) -> int:
    """Inside a transaction: forget processed ids older than ``older_than_s`` seconds and sent
    outputs; how many ids were forgotten."""
    cutoff = time.time() - older_than_s
    removed = db.execute("DELETE FROM inbox WHERE processed_at < ?", (cutoff,)).rowcount
    db.execute("DELETE FROM outbox WHERE sent = 1")
    return int(removed)


class PendingMarks:
    """Outputs delivered while a handler's transaction was open on the store's connection
    (deliveries run beside the next handler): marked sent as soon as it closes. Until then they
    count as unsent: at worst a restart sends them again, with the same ids."""

    def __init__(
        self,
        mark_sent: Callable[[Sequence[int]], None],
        in_transaction: Callable[[], bool],
        refused: tuple[type[Exception], ...],
    ) -> None:
        self._mark_sent = mark_sent
        self._in_transaction = in_transaction
        self._refused = refused
        self._seqs: list[int] = []

    def add(self, seqs: Sequence[int]) -> None:
        """Mark ``seqs`` sent now, or once the open transaction closes."""
        self._seqs.extend(seqs)
        if not self._in_transaction():
            self.apply()

    def apply(self) -> None:
        """Apply the waiting marks; kept for later if the database refuses them now (locked,
        full, unreachable): unmarked outputs are only sent again, never lost."""
        if self._seqs and not self._in_transaction():
            seqs, self._seqs = self._seqs, []
            try:
                self._mark_sent(seqs)
            except self._refused:
                self._seqs = seqs + self._seqs
                raise
