"""Integration fixtures: a real broker, and the whole system started by the real supervisor.

The broker is the embedded Apache Kafka (KRaft, the jars `make install` fetched) unless
``ITINERANT_TEST_BROKER`` says ``tansu`` (the no-Java fallback) or ``testcontainers`` (Apache
Kafka in Docker, where an engine answers). test_tansu_smoke.py runs a few scenarios on Tansu
whatever the setting; test_cluster_*.py start a three-node cluster of their own."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from itinerant.brokers.kafka import KafkaNode
from itinerant.brokers.tansu import TansuBroker
from itinerant.cli.kafka_io import Seen, follow, publish_raw, publish_request
from itinerant.cli.supervisor import Supervisor
from itinerant.security.keys import ensure_local_keys, keys_dir
from itinerant.settings import Settings
from itinerant.testing import signed
from itinerant.wire.envelope import OutMessage
from services.contracts.trip import TripRequest
from services.settings import TravelSettings

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
    kind: str  # a Settings.broker value: "kafka" or "tansu"
    description: str = ""


def test_broker_choice() -> str:
    return os.environ.get("ITINERANT_TEST_BROKER", "kafka")


def embedded_kafka(storage: Path) -> KafkaNode:
    """A fresh single-node Apache Kafka on free loopback ports (stopped by the caller)."""
    node = KafkaNode(storage=storage, port=free_port(), controller_port=free_port(), heap_mb=512)
    node.start(storage / "kafka.log")
    return node


@contextlib.contextmanager
def tansu_broker(log_dir: Path) -> Iterator[Broker]:
    embedded = TansuBroker("127.0.0.1", free_port(), startup_timeout_s=20.0)
    embedded.start(log_dir / "tansu.log")
    try:
        yield Broker(embedded.bootstrap, "tansu", "Tansu 0.6, memory engine")
    finally:
        gc.collect()
        embedded.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    choice = test_broker_choice()
    if choice == "tansu":
        with tansu_broker(tmp_path_factory.mktemp("broker")) as tansu:
            yield tansu
        return
    if choice == "testcontainers" and docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1") as kafka:
            yield Broker(kafka.get_bootstrap_server(), "kafka", "Apache Kafka (testcontainers)")
        return
    node = embedded_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield Broker(node.bootstrap, "kafka", "embedded Apache Kafka (KRaft, one node)")
    finally:
        gc.collect()
        node.stop()


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

    def publish(self, request: TripRequest | str, principal: str | None = None) -> str:
        """Publish a request: unsigned (anonymous), or signed as ``principal`` (its customer;
        the principal's key is generated under the system's keys folder when missing)."""
        if isinstance(request, str):
            raw = json.loads((EXAMPLES / request).read_text())
            request = TripRequest.model_validate(raw)
        if request.request_id is None:
            request = request.model_copy(update={"request_id": str(uuid.uuid4())})
        if principal is not None:
            ensure_local_keys(keys_dir(self.settings), [principal])
        return publish_request(self.settings, request, principal=principal)

    def publish_raw(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        publish_raw(self.settings, topic, key, value, headers)

    def sign(self, message: OutMessage, principal: str | None = None) -> OutMessage:
        """A crafted message signed (its visits too) as the service its source names: what it
        takes to get past authentication to the check a test is about."""
        return signed(self.settings, message, principal)

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


def app_env(overrides: dict[str, Any]) -> dict[str, str]:
    """The travel mesh's own settings among ``overrides``, as the environment its services read."""
    env = {}
    for name in [n for n in overrides if n in TravelSettings.model_fields]:
        value = overrides.pop(name)
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"ITINERANT_{name.upper()}"] = text
    return env


def start_system(broker: Broker, data_dir: Path, **overrides: Any) -> System:
    """Every service of the mesh as its own process on ``broker``; ``overrides`` are Settings
    fields or the travel mesh's own settings (services/settings.py), or ``replicas`` (processes
    per service, as `itinerant up --replicas`)."""
    extra_env = app_env(overrides)
    replicas: dict[str, int] = overrides.pop("replicas", {})
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        broker=broker.kind,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=data_dir,
        partitions=overrides.pop("partitions", 2),
        # replica r of a service is (r - 1) * 100 ports above the first (REPLICA_PORT_STRIDE)
        metrics_port_base=overrides.pop("metrics_port_base", None)
        or free_port_block(100 * max([1, *replicas.values()])),
        coordinator_http_port=free_port(),
        gateway_port=free_port(),
        # the console only where a test asks for it (console_port=free_port()): one process less
        console_port=overrides.pop("console_port", 0),
        **overrides,
    )
    supervisor = Supervisor(settings, start_broker=False, extra_env=extra_env, replicas=replicas)
    try:
        supervisor.start()
        supervisor.wait_ready(90)
    except BaseException:
        supervisor.stop()
        raise
    return System(supervisor.settings, supervisor)  # bound to the mesh: its agents and topics


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(broker, tmp_path_factory.mktemp("system"))
    try:
        yield running
    finally:
        running.supervisor.stop()
