"""The state store (docs/architecture.md#delivery-guarantees): one SQLite database (WAL) per
service, the zero-setup default; `itinerant/runtime/store_postgres.py` is the same store in
PostgreSQL, shared by a service's replicas (docs/operations.md#postgresql-state).

It holds the transactional inbox (ids of processed messages with the outputs they caused), the
outbox (outputs not yet acknowledged by Kafka) and the service's own tables, so that a state
change, the record that its message was processed, and the messages it must send commit together.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from itinerant.errors import HandledElsewhere, StoreUnavailable
from itinerant.runtime import bookkeeping
from itinerant.wire.envelope import OutMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    message_id   TEXT PRIMARY KEY,
    processed_at REAL NOT NULL,
    outputs      TEXT NOT NULL,
    source       TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    message TEXT NOT NULL,
    sent    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(sent) WHERE sent = 0;
"""


def store_bytes(path: Path) -> int:
    """A SQLite database's file and its write-ahead log and shared-memory files."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            total += part.stat().st_size
        except FileNotFoundError:
            continue
    return total


class Cursor(Protocol):
    """What a query answers: rows by index (``row[0]``) and by column name (``row["seq"]``)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """The connection a handler gets as ``ctx.db``: SQLite's, or PostgreSQL's behind an adapter.

    Write portable SQL: ``?`` placeholders, ``INSERT ... ON CONFLICT DO NOTHING`` (not SQLite's
    ``INSERT OR IGNORE``), types both know (TEXT, INTEGER, REAL), no SQLite-only functions.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...


#: What a store raises when it cannot do the work now (locked, full, unreachable): bookkeeping
#: that meets one of these is tried again later.
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, StoreUnavailable)


class StateStore(Protocol):
    """A service's state: the inbox, the outbox and its own tables, changed together."""

    name: str

    def size_bytes(self) -> int: ...

    @property
    def connection(self) -> Any: ...

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def recorded_outputs(self, message_id: str) -> list[OutMessage] | None: ...

    def record(
        self, conn: Any, message_id: str | None, outputs: Sequence[OutMessage]
    ) -> list[int]: ...

    def unsent(self, limit: int = 1000) -> list[tuple[int, OutMessage]]: ...

    def mark_sent(self, seqs: Sequence[int]) -> None: ...

    def mark_sent_soon(self, seqs: Sequence[int]) -> None: ...

    def mark_sent_pending(self) -> None: ...

    def prune(self, older_than_s: float) -> int: ...


class Store:
    """A service's SQLite database: one writer at a time (``BEGIN IMMEDIATE``; its replicas on this
    machine share the file), any number of readers."""

    def __init__(self, path: Path, migrations: Sequence[str] = ()) -> None:
        self.path = path
        self.name = path.stem
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (kill -9); FULL would also survive power loss.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._lock = threading.RLock()
        self._pending_marks = bookkeeping.PendingMarks(
            self.mark_sent, lambda: self._conn.in_transaction, (sqlite3.Error,)
        )
        self._conn.executescript(_SCHEMA)
        columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(inbox)")}
        if bookkeeping.SOURCE_COLUMN not in columns:  # a store from before exactly-once
            self._conn.execute(f"ALTER TABLE inbox ADD COLUMN {bookkeeping.SOURCE_COLUMN} TEXT")
        for ddl in migrations:
            self._conn.executescript(ddl)

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def size_bytes(self) -> int:
        return store_bytes(self.path)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back if the block raises."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- inbox and outbox (runtime/bookkeeping.py) --------------------------------------------

    def recorded_outputs(self, message_id: str) -> list[OutMessage] | None:
        """The outputs recorded for an already-processed message, or ``None`` if it is new."""
        return bookkeeping.recorded_outputs(self._conn, message_id)

    def record(
        self, conn: sqlite3.Connection, message_id: str | None, outputs: Sequence[OutMessage]
    ) -> list[int]:
        """Inside a transaction: mark ``message_id`` processed and queue ``outputs``."""
        try:
            return bookkeeping.record(conn, message_id, outputs)
        except sqlite3.IntegrityError as exc:
            raise HandledElsewhere(f"message {message_id} was recorded meanwhile") from exc

    def unsent(self, limit: int = 1000) -> list[tuple[int, OutMessage]]:
        return bookkeeping.unsent(self._conn, limit)

    def mark_sent(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self._conn.executemany("UPDATE outbox SET sent = 1 WHERE seq = ?", [(s,) for s in seqs])

    def mark_sent_soon(self, seqs: Sequence[int]) -> None:
        """Mark outputs sent now, or as soon as the handler's open transaction closes."""
        self._pending_marks.add(seqs)

    def mark_sent_pending(self) -> None:
        self._pending_marks.apply()

    def prune(self, older_than_s: float) -> int:
        """Forget processed ids and sent outputs older than ``older_than_s`` seconds."""
        with self.transaction() as conn:
            return bookkeeping.prune(conn, older_than_s)
