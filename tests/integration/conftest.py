"""Integration fixtures: a real broker (Apache Kafka through testcontainers when a Docker engine
answers, else the embedded Tansu), and the whole system started by the real supervisor."""

from __future__ import annotations

import gc
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.cli.kafka_io import Seen, follow, publish_raw, publish_request
from services.cli.supervisor import Supervisor
from services.contracts.trip import TripRequest
from services.runtime.broker import EmbeddedBroker
from services.runtime.settings import Settings

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_block(size: int) -> int:
    """First port of ``size`` consecutive free ports."""
    for _ in range(50):
        base = free_port()
        if base + size > 65000:
            continue
        ok = True
        for port in range(base, base + size):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


def docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    kind: str


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.0") as kafka:
            yield Broker(kafka.get_bootstrap_server(), "apache-kafka")
        return
    embedded = EmbeddedBroker("127.0.0.1", free_port(), startup_timeout_s=20.0)
    embedded.start(tmp_path_factory.mktemp("broker") / "tansu.log")
    try:
        yield Broker(embedded.bootstrap, "tansu (no Docker engine answered, so no Apache Kafka)")
    finally:
        gc.collect()
        embedded.stop()


def poll_until(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")


@dataclass
class System:
    settings: Settings
    supervisor: Supervisor

    def publish(self, request: TripRequest | str) -> str:
        if isinstance(request, str):
            raw = json.loads((EXAMPLES / request).read_text())
            request = TripRequest.model_validate(raw)
        if request.request_id is None:
            request = request.model_copy(update={"request_id": str(uuid.uuid4())})
        return publish_request(self.settings, request)

    def publish_raw(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        publish_raw(self.settings, topic, key, value, headers)

    def collect(
        self, topics: list[str], until: Callable[[list[Seen]], bool], timeout_s: float, what: str
    ) -> list[Seen]:
        seen: list[Seen] = []
        deadline = time.monotonic() + timeout_s
        for record in follow(self.settings, topics):
            if record is not None:
                seen.append(record)
            if until(seen):
                return seen
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout_s:.0f}s waiting for {what}; saw "
                    f"{[(s.topic, s.key, s.headers.get('x-dlq-reason')) for s in seen][-10:]}"
                )
        return seen

    def results(self, saga_ids: set[str], timeout_s: float = 60) -> dict[str, dict[str, Any]]:
        def done(seen: list[Seen]) -> bool:
            return saga_ids <= {s.key for s in seen if s.value is not None}

        seen = self.collect(
            [self.settings.results_topic], done, timeout_s, f"results of {len(saga_ids)} saga(s)"
        )
        return {s.key: s.value for s in seen if s.key in saga_ids and s.value is not None}

    def dead_letters(
        self, where: Callable[[Seen], bool], count: int = 1, timeout_s: float = 30
    ) -> list[Seen]:
        seen = self.collect(
            [self.settings.dlq_topic],
            lambda got: len([s for s in got if where(s)]) >= count,
            timeout_s,
            f"{count} dead letter(s)",
        )
        return [s for s in seen if where(s)]

    def db(self, service: str) -> sqlite3.Connection:
        path = self.settings.data_dir / "state" / f"{service}.db"
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def start_system(broker: Broker, data_dir: Path, **overrides: Any) -> System:
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        embedded_broker=False,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=data_dir,
        partitions=2,
        metrics_port_base=free_port_block(8),
        coordinator_http_port=free_port(),
        gateway_port=free_port(),
        **overrides,
    )
    supervisor = Supervisor(settings)
    try:
        supervisor.start()
        supervisor.wait_ready(90)
    except BaseException:
        supervisor.stop()
        raise
    return System(settings, supervisor)


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(broker, tmp_path_factory.mktemp("system"))
    try:
        yield running
    finally:
        running.supervisor.stop()
