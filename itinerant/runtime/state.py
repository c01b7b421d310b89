"""Which state store a service gets: PostgreSQL when ``ITINERANT_STATE_URL`` is set, else its own
SQLite file under the data dir (docs/operations.md#postgresql-state)."""

from __future__ import annotations

from collections.abc import Sequence

from itinerant.runtime.store import StateStore, Store
from itinerant.settings import Settings


def open_store(settings: Settings, service: str, migrations: Sequence[str] = ()) -> StateStore:
    """The state store of ``service`` (an agent or the coordinator), its tables made by
    ``migrations``."""
    if settings.state_url is not None:
        from itinerant.runtime.store_postgres import PostgresStore  # psycopg only when used

        return PostgresStore(settings.state_url.get_secret_value(), service, migrations)
    return Store(settings.data_dir / "state" / f"{service}.db", migrations)
