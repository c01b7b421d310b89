"""Shared fixtures: settings isolated per test (own data dir)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from itinerant.settings import Settings
from itinerant.testing import InMemoryMesh
from services.settings import travel_settings


@pytest.fixture(autouse=True)
def _fresh_travel_settings() -> Iterator[None]:
    """The travel mesh's settings are read from the environment once; a test that sets
    ITINERANT_* (monkeypatch.setenv) gets them re-read."""
    travel_settings.cache_clear()
    yield
    travel_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings of a test. With ``ITINERANT_TEST_ALL_ON_POSTGRES=1`` every agent's state is in a
    fresh PostgreSQL database of the test's own (the SQLite suite run again on PostgreSQL)."""
    import os

    extra = {}
    if os.environ.get("ITINERANT_TEST_ALL_ON_POSTGRES") == "1":
        extra["state_url"] = request.getfixturevalue("state_url")
    return Settings(
        data_dir=tmp_path / "data", metrics_port_base=0, coordinator_http_port=0, **extra
    )


@pytest.fixture
def mesh(settings: Settings) -> Iterator[InMemoryMesh]:
    built = InMemoryMesh(settings)
    yield built
    for store in built.stores.values():
        store.close()


def pytest_report_header(config: pytest.Config) -> str:
    from tests.integration.conftest import test_broker_choice

    choice = test_broker_choice()
    if choice == "tansu":
        return "integration broker: embedded Tansu (ITINERANT_TEST_BROKER=tansu)"
    if choice == "testcontainers":
        return "integration broker: Apache Kafka through testcontainers (when Docker answers)"
    return "integration broker: embedded Apache Kafka (KRaft); test_tansu_smoke also on Tansu"


POSTGRES_PORT = 55432


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server for the tests: ``ITINERANT_TEST_STATE_URL``, else the local one that
    `deploy/postgres/ensure.sh` starts (installing Debian's package when missing) on port 55432.
    Never skipped: without a server the test fails saying how to get one."""
    import os
    import subprocess

    import psycopg

    url = os.environ.get("ITINERANT_TEST_STATE_URL")
    if not url:
        root = Path(__file__).resolve().parents[1]
        done = subprocess.run(
            [
                "bash",
                str(root / "deploy/postgres/ensure.sh"),
                str(root / ".postgres"),
                str(POSTGRES_PORT),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.fail(
                "no PostgreSQL for the tests: deploy/postgres/ensure.sh failed "
                f"({done.stderr.strip() or done.stdout.strip()}); run `make postgres` or set "
                "ITINERANT_TEST_STATE_URL",
                pytrace=False,
            )
        url = f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/postgres"
    with psycopg.connect(url, connect_timeout=10):
        pass
    return url


@pytest.fixture
def state_url(postgres_url: str) -> Iterator[str]:
    """``postgres_url`` with a fresh database of this test's own, dropped after."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
