"""Saga persistence in the coordinator's state store (one row per saga, the saga as JSON)."""

from __future__ import annotations

from datetime import datetime

from itinerant.runtime.store import Database

from .saga import TERMINAL, Saga, SagaState

SAGAS = """
CREATE TABLE IF NOT EXISTS sagas (
    saga_id       TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    deadline      DOUBLE PRECISION NOT NULL,
    step_deadline DOUBLE PRECISION,
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    doc           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sagas_by_state ON sagas(state);
"""

_ACTIVE = tuple(s.value for s in SagaState if s not in TERMINAL)


def load(conn: Database, saga_id: str) -> Saga | None:
    row = conn.execute("SELECT doc FROM sagas WHERE saga_id = ?", (saga_id,)).fetchone()
    return Saga.model_validate_json(row[0]) if row else None


def save(conn: Database, saga: Saga) -> None:
    conn.execute(
        "INSERT INTO sagas(saga_id, state, deadline, step_deadline, created_at, updated_at, doc) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(saga_id) DO UPDATE SET state=excluded.state, "
        "deadline=excluded.deadline, step_deadline=excluded.step_deadline, "
        "updated_at=excluded.updated_at, doc=excluded.doc",
        (
            saga.saga_id,
            saga.state.value,
            saga.deadline.timestamp(),
            saga.step_deadline.timestamp() if saga.step_deadline else None,
            saga.created_at.timestamp(),
            saga.updated_at.timestamp(),
            saga.model_dump_json(),
        ),
    )


def due(conn: Database, now: datetime, limit: int = 500) -> list[str]:
    """Ids of active sagas whose deadline or step deadline has passed."""
    marks = ",".join("?" * len(_ACTIVE))
    rows = conn.execute(
        f"SELECT saga_id FROM sagas WHERE state IN ({marks}) "
        "AND (deadline <= ? OR (step_deadline IS NOT NULL AND step_deadline <= ?)) LIMIT ?",
        (*_ACTIVE, now.timestamp(), now.timestamp(), limit),
    ).fetchall()
    return [r[0] for r in rows]


def counts_by_state(conn: Database) -> dict[str, int]:
    rows = conn.execute("SELECT state, COUNT(*) FROM sagas GROUP BY state").fetchall()
    return {r[0]: int(r[1]) for r in rows}


def recent(conn: Database, state: str | None = None, limit: int = 50) -> list[Saga]:
    if state:
        rows = conn.execute(
            "SELECT doc FROM sagas WHERE state = ? ORDER BY updated_at DESC LIMIT ?",
            (state, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT doc FROM sagas ORDER BY updated_at DESC LIMIT ?", (limit,)
        ).fetchall()
    return [Saga.model_validate_json(r[0]) for r in rows]
