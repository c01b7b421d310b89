"""Replicas of one service on the PostgreSQL state store (docs/operations.md#postgresql-state):
one inbox, one outbox, one set of tables, and their transactions one at a time, on a real
PostgreSQL server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from itinerant.errors import StoreUnavailable
from itinerant.runtime.state import open_store
from itinerant.runtime.store_postgres import PostgresStore, redacted
from itinerant.settings import Settings
from itinerant.wire.envelope import OutMessage

SEATS = "CREATE TABLE IF NOT EXISTS holds (hold_id TEXT PRIMARY KEY, seats INTEGER NOT NULL);"
CAPACITY = 1


@pytest.fixture
def replicas(state_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    a = PostgresStore(state_url, "flights", (SEATS,))
    b = PostgresStore(state_url, "flights", (SEATS,))
    yield a, b
    a.close()
    b.close()


def test_a_message_one_replica_processed_is_a_duplicate_to_the_other(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    out = OutMessage("t", b"k", b'{"n": 1}', [("h", b"\xff")])
    with a.transaction() as conn:
        seqs = a.record(conn, "m-1", [out])
    assert b.recorded_outputs("m-1") == [out]
    assert b.unsent() == [(seqs[0], out)]
    b.mark_sent(seqs)
    assert a.unsent() == []


def hold_last_seat(store: PostgresStore, hold_id: str, read: threading.Event) -> bool:
    """A handler's read-then-write: hold a seat when one is free."""
    with store.transaction() as db:
        taken = db.execute("SELECT COALESCE(SUM(seats), 0) FROM holds").fetchone()[0]
        read.set()
        if taken >= CAPACITY:
            return False
        db.execute("INSERT INTO holds VALUES (?, 1)", (hold_id,))
        return True


def waiting_for_the_lock(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
        return int(row[0]) if row else 0


def test_two_replicas_booking_the_last_seat_hold_it_once(
    replicas: tuple[PostgresStore, PostgresStore], state_url: str
) -> None:
    a, b = replicas
    results: dict[str, bool] = {}
    a_read, b_read = threading.Event(), threading.Event()
    release = threading.Event()

    def first() -> None:
        with a.transaction() as db:
            taken = db.execute("SELECT COALESCE(SUM(seats), 0) FROM holds").fetchone()[0]
            a_read.set()
            release.wait(10)  # the other replica tries meanwhile
            if taken < CAPACITY:
                db.execute("INSERT INTO holds VALUES (?, 1)", ("a",))
            results["a"] = taken < CAPACITY

    def second() -> None:
        results["b"] = hold_last_seat(b, "b", b_read)

    ta = threading.Thread(target=first)
    ta.start()
    assert a_read.wait(10)
    tb = threading.Thread(target=second)
    tb.start()
    deadline = time.monotonic() + 10
    while waiting_for_the_lock(state_url) < 1:  # b waits for a's transaction, not beside it
        assert time.monotonic() < deadline, "the second replica did not wait for the first"
        time.sleep(0.02)
    assert not b_read.is_set()
    release.set()
    ta.join(10)
    tb.join(10)
    assert results == {"a": True, "b": False}
    rows = a.connection.execute("SELECT hold_id FROM holds").fetchall()
    assert [r[0] for r in rows] == ["a"]


def test_the_setting_chooses_the_store_and_an_unreachable_server_says_what_to_do(
    state_url: str, tmp_path: object
) -> None:
    chosen = open_store(Settings(state_url=state_url), "hotels", (SEATS,))
    assert isinstance(chosen, PostgresStore) and chosen.schema == "svc_hotels"
    assert chosen.size_bytes() > 0
    chosen.close()
    secret = "postgresql://itinerant:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(secret, "hotels")
    message = str(caught.value)
    assert "s3cret" not in message
    assert "postgresql://itinerant@127.0.0.1:1/nowhere" in message
    assert "ITINERANT_STATE_URL" in message
    assert redacted(secret) == "postgresql://itinerant@127.0.0.1:1/nowhere"
