"""The state store (docs/architecture.md#delivery-guarantees): transactional inbox and outbox in
one transaction, the same on SQLite and on PostgreSQL (each test runs on both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from itinerant.errors import HandledElsewhere
from itinerant.runtime.store import StateStore, Store
from itinerant.runtime.store_postgres import PostgresStore
from itinerant.wire.envelope import OutMessage

THINGS = "CREATE TABLE IF NOT EXISTS things (id TEXT PRIMARY KEY, n INTEGER NOT NULL);"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened: StateStore
    if request.param == "sqlite":
        opened = Store(tmp_path / "deep" / "svc.db", (THINGS,))
    else:
        opened = PostgresStore(request.getfixturevalue("state_url"), "svc", (THINGS,))
    yield opened
    opened.close()


def out(n: int) -> OutMessage:
    return OutMessage(f"topic.{n}", f"k{n}".encode(), f'{{"n": {n}}}'.encode(), [("h", b"\xff")])


def count(store: StateStore, table: str) -> int:
    return int(store.connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_opens_wal_and_runs_migrations(tmp_path: Path) -> None:
    store = Store(tmp_path / "deep" / "svc.db", (THINGS,))
    assert (tmp_path / "deep" / "svc.db").exists()
    mode = store.connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"
    assert count(store, "things") == 0
    # Re-opening with the same migrations is idempotent.
    Store(tmp_path / "deep" / "svc.db", (THINGS,)).close()
    store.close()


def test_record_then_recorded_outputs_detects_the_duplicate(store: StateStore) -> None:
    assert store.recorded_outputs("m-1") is None
    with store.transaction() as conn:
        conn.execute("INSERT INTO things VALUES ('a', 1)")
        seqs = store.record(conn, "m-1", [out(1), out(2)])
    assert len(seqs) == 2 and seqs[0] < seqs[1]
    assert store.recorded_outputs("m-1") == [out(1), out(2)]
    assert store.recorded_outputs("m-2") is None


def test_record_without_outputs_still_marks_the_message(store: StateStore) -> None:
    with store.transaction() as conn:
        assert store.record(conn, "m-empty", []) == []
    assert store.recorded_outputs("m-empty") == []


def test_record_without_id_only_queues_outputs(store: StateStore) -> None:
    with store.transaction() as conn:
        seqs = store.record(conn, None, [out(1)])
    assert count(store, "inbox") == 0
    assert [s for s, _ in store.unsent()] == seqs


def test_recording_the_same_id_twice_fails_and_rolls_back(store: StateStore) -> None:
    with store.transaction() as conn:
        store.record(conn, "m-1", [out(1)])
    with pytest.raises(HandledElsewhere), store.transaction() as conn:
        conn.execute("INSERT INTO things VALUES ('b', 2)")
        store.record(conn, "m-1", [out(9)])
    assert count(store, "things") == 0
    assert [m for _, m in store.unsent()] == [out(1)]


def test_rollback_leaves_no_inbox_no_outbox_no_state(store: StateStore) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as conn:
        conn.execute("INSERT INTO things VALUES ('a', 1)")
        store.record(conn, "m-1", [out(1), out(2)])
        raise Boom
    assert store.recorded_outputs("m-1") is None
    assert count(store, "inbox") == 0
    assert count(store, "outbox") == 0
    assert count(store, "things") == 0
    # The store is usable afterwards (no transaction left open).
    with store.transaction() as conn:
        store.record(conn, "m-1", [out(1)])
    assert store.recorded_outputs("m-1") == [out(1)]


def test_unsent_and_mark_sent(store: StateStore) -> None:
    with store.transaction() as conn:
        first = store.record(conn, "m-1", [out(1), out(2)])
    with store.transaction() as conn:
        second = store.record(conn, "m-2", [out(3)])
    assert store.unsent() == [(first[0], out(1)), (first[1], out(2)), (second[0], out(3))]
    assert [s for s, _ in store.unsent(limit=2)] == first
    store.mark_sent([first[1]])
    assert store.unsent() == [(first[0], out(1)), (second[0], out(3))]
    store.mark_sent([])
    store.mark_sent([first[0], second[0]])
    assert store.unsent() == []
    # Marking as sent does not forget the inbox record.
    assert store.recorded_outputs("m-1") == [out(1), out(2)]


def test_prune_forgets_old_ids_and_sent_outputs_only(store: StateStore) -> None:
    with store.transaction() as conn:
        sent = store.record(conn, "m-old", [out(1)])
        store.record(conn, None, [out(2)])
    store.mark_sent(sent)
    assert store.prune(older_than_s=3600) == 0
    assert store.recorded_outputs("m-old") == [out(1)]
    assert count(store, "outbox") == 1  # the sent row went, the unsent one stays
    assert [m for _, m in store.unsent()] == [out(2)]
    assert store.prune(older_than_s=-10) == 1
    assert store.recorded_outputs("m-old") is None
    assert [m for _, m in store.unsent()] == [out(2)]


def test_marks_made_during_a_transaction_wait_until_it_closes(store: StateStore) -> None:
    with store.transaction() as conn:
        first = store.record(conn, "m-1", [out(1)])
    with store.transaction() as conn:
        # A delivery finishing while the next handler's transaction is open.
        store.mark_sent_soon(first)
        second = store.record(conn, "m-2", [out(2)])
        assert [s for s, _ in store.unsent()] == first + second  # not yet marked
    store.mark_sent_pending()
    assert [s for s, _ in store.unsent()] == second
    store.mark_sent_soon(second)  # no transaction open: marked at once
    assert store.unsent() == []
