"""Growth kept bounded (docs/operations.md#growth): file rotation, inbox pruning on a schedule,
store sizes as a metric and in `itinerant status`."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from typer.testing import CliRunner

from itinerant.cli.main import app
from itinerant.observability import metrics
from itinerant.observability.rotation import copy_truncate, rotate, rotated
from itinerant.runtime.housekeeping import Housekeeping
from itinerant.runtime.store import Store, store_bytes
from itinerant.settings import Settings
from itinerant.wire.envelope import OutMessage


def test_rotate_renames_past_the_cap_and_keeps_so_many(tmp_path: Path) -> None:
    path = tmp_path / "svc.jsonl"
    for generation in range(4):
        path.write_text(f"gen{generation}" + "x" * 100)
        assert rotate(path, max_bytes=50, keep=2)
        assert not path.exists()
    assert rotated(path, 1).read_text().startswith("gen3")
    assert rotated(path, 2).read_text().startswith("gen2")
    assert not rotated(path, 3).exists()
    path.write_text("small")
    assert not rotate(path, max_bytes=50, keep=2) and path.read_text() == "small"


def test_copy_truncate_keeps_an_appending_writer_writing(tmp_path: Path) -> None:
    path = tmp_path / "svc.log"
    writer = path.open("ab")  # a child's stdout, opened in append mode by the supervisor
    writer.write(b"old line\n" * 20)
    writer.flush()
    assert copy_truncate(path, max_bytes=100, keep=3)
    writer.write(b"new line\n")
    writer.flush()
    writer.close()
    assert path.read_bytes() == b"new line\n"  # at the new end, no hole of zeros
    assert rotated(path, 1).read_bytes() == b"old line\n" * 20


def test_housekeeping_prunes_old_inbox_rows_on_schedule_and_reports_sizes(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state" / "svc.db")
    try:
        message = OutMessage("t", b"k", b"v", [])
        with store.transaction() as conn:
            store.record(conn, "old", [message])
            store.record(conn, "new", [])
        store.mark_sent([1])
        day = 86_400
        store.connection.execute(
            "UPDATE inbox SET processed_at = ? WHERE message_id = 'old'", (time.time() - 8 * day,)
        )
        settings = Settings(data_dir=tmp_path, inbox_retention_s=7 * day, prune_interval_s=3600)
        keeping = Housekeeping("svc-growth", [store], settings)
        assert keeping.prune() == 1
        assert store.recorded_outputs("old") is None  # forgotten past the retention
        assert store.recorded_outputs("new") == []  # kept
        assert store.connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        keeping.last_prune = time.monotonic()
        asyncio.run(keeping.tick())  # not due yet: sizes only
        gauge = metrics.STORE_BYTES.labels("svc-growth", "svc")._value.get()
        assert gauge == store_bytes(store.path) > 0
    finally:
        store.close()


def test_status_without_a_saga_shows_the_local_services_and_their_sizes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "state").mkdir(parents=True)
    (data / "logs").mkdir()
    (data / "run").mkdir()
    Store(data / "state" / "flights.db").close()
    (data / "logs" / "flights.log").write_bytes(b"x" * 1000)
    (data / "logs" / "flights.log.1").write_bytes(b"x" * 500)
    (data / "run" / "up.json").write_text(json.dumps({"services": {"flights": os.getpid()}}))
    result = CliRunner().invoke(app, ["status", "--json"], env={"ITINERANT_DATA_DIR": str(data)})
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["service"] == "flights" and row["running"] is True
    assert row["log_bytes"] == 1500 and row["store_bytes"] > 0
