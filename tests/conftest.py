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
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", metrics_port_base=0, coordinator_http_port=0)


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
