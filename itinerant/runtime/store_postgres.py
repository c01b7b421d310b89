"""The state store in PostgreSQL (docs/operations.md#postgresql-state): the same inbox, outbox and
service tables as the SQLite store, with the same semantics, in one schema per service, shared by
every replica of the service.

- A transaction takes the service's advisory lock first (``pg_advisory_xact_lock``), so the
  transactions of a service's replicas run one at a time, as a SQLite database's writers do
  (``BEGIN IMMEDIATE``): a handler's read-then-write (seats left, then hold them) cannot
  interleave with another replica's, and nothing is overbooked.
- The inbox is shared: a message one replica processed is, to another that gets it after a
  rebalance, a duplicate whose recorded outputs are sent again.
- Handlers keep writing the portable SQL of ``Database`` (``?`` placeholders); the adapter turns
  the placeholders into psycopg's.
- A connection the server dropped is a retryable ``StoreUnavailable`` (the record is tried again,
  then dead-lettered), reconnected on the next transaction; the URL's password is never logged.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import pq

from itinerant.errors import HandledElsewhere, StoreUnavailable
from itinerant.runtime import bookkeeping
from itinerant.wire.envelope import OutMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    message_id   TEXT PRIMARY KEY,
    processed_at DOUBLE PRECISION NOT NULL,
    outputs      TEXT NOT NULL,
    source       TEXT
);
ALTER TABLE inbox ADD COLUMN IF NOT EXISTS source TEXT;
CREATE TABLE IF NOT EXISTS outbox (
    seq     BIGSERIAL PRIMARY KEY,
    message TEXT NOT NULL,
    sent    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(sent) WHERE sent = 0;
"""


def redacted(url: str) -> str:
    """``url`` without its password: what an error or a log line may show."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def schema_name(service: str) -> str:
    """The service's schema: its name in lower case, other characters as ``_``."""
    return "svc_" + re.sub(r"[^a-z0-9_]", "_", service.lower())


class _Row(tuple[Any, ...]):
    """A row by index (``row[0]``) and by column name (``row["seq"]``), as ``sqlite3.Row``."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def _rows(cursor: psycopg.Cursor[Any]) -> Any:
    names = tuple(c.name for c in cursor.description or ())

    def make(values: Sequence[Any]) -> _Row:
        row = _Row(values)
        row.names = names
        return row

    return make


def _placeholders(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Cursor:
    def __init__(self, cursor: psycopg.Cursor[Any], lastrowid: int | None = None) -> None:
        self._cursor = cursor
        self.lastrowid = lastrowid

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class PgDatabase:
    """``ctx.db`` on PostgreSQL: ``execute`` with ``?`` placeholders, rows as SQLite's."""

    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        self._conn = conn
        self._url = url

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            cursor = self._conn.cursor(row_factory=_rows)
            if parameters:
                cursor.execute(_placeholders(sql), tuple(parameters))
            else:
                cursor.execute(sql.replace("%", "%%"))
            return _Cursor(cursor)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL at {redacted(self._url)}: {exc}") from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [tuple(r) for r in rows])

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != pq.TransactionStatus.IDLE


class PostgresStore:
    """A service's state in its own schema of a PostgreSQL database (see the module doc)."""

    def __init__(self, url: str, service: str, migrations: Sequence[str] = ()) -> None:
        self.url = url
        self.name = service
        self.schema = schema_name(service)
        self._lock_key = zlib.crc32(self.schema.encode())
        self._lock = threading.RLock()
        self._pending_marks = bookkeeping.PendingMarks(
            self.mark_sent, lambda: self._db.in_transaction, (StoreUnavailable,)
        )
        self._conn = self._connect()
        self._db = PgDatabase(self._conn, url)
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            for ddl in (_SCHEMA, *migrations):
                self._conn.execute(ddl.replace("%", "%%"))

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"cannot reach the state store, PostgreSQL at {redacted(self.url)} ({exc}). "
                "Start it (make postgres starts a local one) or unset ITINERANT_STATE_URL to "
                "keep state in SQLite."
            ) from exc
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        conn.execute(f'SET search_path TO "{self.schema}"')
        return conn

    def _reconnect_if_closed(self) -> None:
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
            self._db = PgDatabase(self._conn, self.url)

    @property
    def connection(self) -> PgDatabase:
        return self._db

    def close(self) -> None:
        self._conn.close()

    def size_bytes(self) -> int:
        """The bytes of the service's tables and indexes."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind = 'r'",
            (self.schema,),
        ).fetchone()
        return int(row[0])

    @contextmanager
    def transaction(self) -> Iterator[PgDatabase]:
        """One transaction holding the service's advisory lock; rolled back if the block raises."""
        with self._lock:
            self._reconnect_if_closed()
            try:
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                    yield self._db
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL at {redacted(self.url)}: {exc}") from exc

    # -- inbox and outbox (runtime/bookkeeping.py) --------------------------------------------

    def recorded_outputs(self, message_id: str) -> list[OutMessage] | None:
        with self._lock:
            self._reconnect_if_closed()
            return bookkeeping.recorded_outputs(self._db, message_id)

    def record(
        self, conn: PgDatabase, message_id: str | None, outputs: Sequence[OutMessage]
    ) -> list[int]:
        """Inside a transaction: mark ``message_id`` processed and queue ``outputs``."""
        try:
            return bookkeeping.record(conn, message_id, outputs)
        except psycopg.errors.UniqueViolation as exc:
            raise HandledElsewhere(f"message {message_id} was recorded meanwhile") from exc

    def unsent(self, limit: int = 1000) -> list[tuple[int, OutMessage]]:
        with self._lock:
            self._reconnect_if_closed()
            return bookkeeping.unsent(self._db, limit)

    def mark_sent(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self._reconnect_if_closed()
            try:
                self._db.execute("UPDATE outbox SET sent = 1 WHERE seq = ANY(?)", (list(seqs),))
            except psycopg.Error as exc:
                raise StoreUnavailable(f"PostgreSQL at {redacted(self.url)}: {exc}") from exc

    def mark_sent_soon(self, seqs: Sequence[int]) -> None:
        """As the SQLite store's: now, or once the handler's open transaction closes."""
        self._pending_marks.add(seqs)

    def mark_sent_pending(self) -> None:
        self._pending_marks.apply()

    def prune(self, older_than_s: float) -> int:
        with self.transaction() as conn:
            return bookkeeping.prune(conn, older_than_s)
