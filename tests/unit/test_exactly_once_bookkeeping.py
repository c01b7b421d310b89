"""What exactly-once processing asks of the inbox and outbox (docs/architecture.md
#exactly-once-results), on SQLite and on PostgreSQL: a redelivered record gets its recorded
outputs again, a second copy at another offset gets none, and outputs of records handled
transactionally never wait in the outbox for a later run to send."""

from __future__ import annotations

import contextvars
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from itinerant.errors import HandledElsewhere
from itinerant.runtime import positions
from itinerant.runtime.positions import Position
from itinerant.runtime.store import StateStore, Store
from itinerant.runtime.store_postgres import PostgresStore
from itinerant.runtime.transactions import Member
from itinerant.wire.envelope import OutMessage

OUT = OutMessage("topic.results", b"saga-1", b'{"status": "completed"}', [("h", b"1")])
AT = Position("topic.in", 1, 41, transactional=True)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened: StateStore
    if request.param == "sqlite":
        opened = Store(tmp_path / "svc.db")
    else:
        opened = PostgresStore(request.getfixturevalue("state_url"), "svc")
    yield opened
    opened.close()


def at(position: Position | None) -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(positions.CURRENT.set, position)
    return context


def record_at(store: StateStore, position: Position | None, message_id: str) -> list[int]:
    def run() -> list[int]:
        with store.transaction() as conn:
            return store.record(conn, message_id, [OUT])

    return at(position).run(run)


def recorded_at(store: StateStore, position: Position | None, message_id: str) -> object:
    return at(position).run(store.recorded_outputs, message_id)


def test_a_redelivered_record_gets_its_outputs_and_a_copy_elsewhere_none(
    store: StateStore,
) -> None:
    record_at(store, AT, "m-1")

    assert recorded_at(store, AT, "m-1") == [OUT]  # the same record again: send them
    elsewhere = Position(AT.topic, AT.partition, AT.offset + 7, transactional=True)
    assert recorded_at(store, elsewhere, "m-1") == []  # a copy: its first was committed
    at_least_once = Position(AT.topic, AT.partition, AT.offset + 7)
    assert recorded_at(store, at_least_once, "m-1") == [OUT]  # at-least-once: send again
    assert recorded_at(store, None, "m-2") is None


def test_a_row_from_before_exactly_once_keeps_the_at_least_once_answer(
    store: StateStore,
) -> None:
    record_at(store, None, "m-old")  # no position: an at-least-once run recorded it

    assert recorded_at(store, AT, "m-old") == [OUT]


def test_outputs_of_transactional_records_never_wait_in_the_outbox(store: StateStore) -> None:
    record_at(store, AT, "m-1")
    assert store.unsent() == []  # their transaction sends them, or the record comes again

    seqs = record_at(store, None, "m-2")  # a timer's or an at-least-once record's outputs
    assert [seq for seq, _ in store.unsent()] == seqs


def test_a_message_recorded_meanwhile_by_another_process_is_handled_elsewhere(
    tmp_path: Path,
) -> None:
    first, second = Store(tmp_path / "svc.db"), Store(tmp_path / "svc.db")
    record_at(first, AT, "m-1")

    with pytest.raises(HandledElsewhere):
        record_at(second, AT, "m-1")
    assert len(second.unsent()) == 0  # its transaction was rolled back: no outputs queued


def test_a_store_from_before_gains_the_source_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE inbox (message_id TEXT PRIMARY KEY, processed_at REAL NOT NULL,"
        " outputs TEXT NOT NULL)"
    )
    old.execute("INSERT INTO inbox VALUES ('m-old', 0, ?)", (json.dumps([OUT.to_json()]),))
    old.commit()
    old.close()

    store = Store(path)

    # The row has no position, so even a transactional copy gets the at-least-once answer.
    assert recorded_at(store, AT, "m-old") == [OUT]
    record_at(store, AT, "m-new")
    assert recorded_at(store, AT, "m-new") == [OUT]


def test_group_metadata_is_written_as_librdkafka_writes_it() -> None:
    consumer = Consumer({"group.id": "itinerant-svc", "bootstrap.servers": "127.0.0.1:9"})
    try:
        expected = consumer.consumer_group_metadata()
    finally:
        consumer.close()

    assert Member("itinerant-svc", -1, "").metadata() == expected
