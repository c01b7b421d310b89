"""A three-node KRaft cluster for the fault tests, and what they measure on it.

:func:`kafka_cluster` starts :class:`KafkaCluster` on six free loopback ports below the
ephemeral range and waits until every node is registered; :class:`ClusterHandle` answers the
questions the tests ask of it (who leads the system's partitions, who is the active controller,
are they fully replicated again). :class:`Publisher` publishes requests on a schedule and records
when each was acknowledged; :class:`ResultWatcher` reads the results topic in a thread and
records when each saga's result arrived, from which the stalls are measured.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import random
import re
import signal
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from itinerant.brokers.connection import quiet_client_config
from itinerant.brokers.kafka import KafkaCluster
from itinerant.cli.supervisor import Supervisor
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope
from services.contracts.trip import TripRequest

from .conftest import Broker, System, free_port_block

SIZE = 3
_ACTIVE_CONTROLLER = re.compile(
    r"\[QuorumController id=\d+\] Becoming the active controller at epoch (?P<epoch>\d+)"
)


@dataclass
class ClusterHandle:
    kafka: KafkaCluster
    log_dir: Path

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def broker(self) -> Broker:
        return Broker(self.bootstrap, "kafka", f"embedded Apache Kafka, {SIZE}-node KRaft cluster")

    def _metadata(self, timeout_s: float = 5.0) -> Any:
        admin = AdminClient(quiet_client_config(self.bootstrap, timeout_s))
        return admin.list_topics(timeout=timeout_s)

    def partitions(self, prefix: str) -> dict[tuple[str, int], Any]:
        """(topic, partition) -> PartitionMetadata of every topic named ``prefix``*."""
        metadata = self._metadata()
        return {
            (name, p.id): p
            for name, topic in metadata.topics.items()
            if name.startswith(prefix)
            for p in topic.partitions.values()
        }

    def registered(self) -> set[int]:
        """Node ids the cluster's metadata lists as live brokers (empty while none answers)."""
        try:
            return set(self._metadata(2.0).brokers)
        except KafkaException:
            return set()

    def wait_registered(self, timeout_s: float = 60.0) -> float:
        """Until every node is a live broker (topics with RF 3 can then be created)."""
        started = time.monotonic()
        wanted = {node.node_id for node in self.kafka.nodes}
        while time.monotonic() - started < timeout_s:
            if self.registered() >= wanted:
                return time.monotonic() - started
            time.sleep(0.2)
        pytest.fail(f"only {sorted(self.registered())} of {sorted(wanted)} registered")

    def under_replicated(self, prefix: str) -> dict[tuple[str, int], list[int]]:
        """Partitions of ``prefix``* topics whose ISR is not every replica (or with no leader)."""
        try:
            found = self.partitions(prefix)
        except KafkaException as exc:
            return {("metadata unavailable", 0): [exc.args[0].code() if exc.args else -1]}
        return {
            key: list(p.isrs)
            for key, p in found.items()
            if p.leader < 0 or set(p.isrs) != set(p.replicas)
        }

    def wait_fully_replicated(self, prefix: str, timeout_s: float) -> float:
        """Seconds until every partition of ``prefix``* has its full ISR again."""
        started = time.monotonic()
        lagging: dict[tuple[str, int], list[int]] = {}
        while time.monotonic() - started < timeout_s:
            lagging = self.under_replicated(prefix)
            if not lagging:
                return time.monotonic() - started
            time.sleep(0.2)
        pytest.fail(f"after {timeout_s:.0f}s still under-replicated: {lagging}")

    def topic_configs(self, prefix: str) -> dict[str, dict[str, str]]:
        """topic -> its configs, for every topic named ``prefix``*."""
        admin = AdminClient(quiet_client_config(self.bootstrap, 5.0))
        names = sorted({topic for topic, _ in self.partitions(prefix)})
        futures = admin.describe_configs([ConfigResource("topic", name) for name in names])
        return {
            resource.name: {k: str(v.value) for k, v in future.result(timeout=10).items()}
            for resource, future in futures.items()
        }

    def wait_leaders_moved(self, prefix: str, node_id: int, timeout_s: float) -> float:
        """Seconds until no partition of ``prefix``* is led by ``node_id`` or leaderless."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            try:
                leaders = self.leader_counts(prefix)
            except KafkaException:
                leaders = Counter({-1: 1})
            if leaders and node_id not in leaders and -1 not in leaders:
                return time.monotonic() - started
            time.sleep(0.1)
        return float("inf")

    def leader_counts(self, prefix: str) -> Counter[int]:
        return Counter(p.leader for p in self.partitions(prefix).values())

    def busiest_node(self, prefix: str) -> int:
        """Index in ``kafka.nodes`` of the node leading most partitions of ``prefix``*."""
        node_id, _ = self.leader_counts(prefix).most_common(1)[0]
        return next(i for i, n in enumerate(self.kafka.nodes) if n.node_id == node_id)

    def active_controller(self) -> int | None:
        """Index in ``kafka.nodes`` of the quorum's active controller, from the nodes' logs (the
        node that last logged becoming it, at the highest epoch); None if none did."""
        best: tuple[int, int] | None = None
        for index, node in enumerate(self.kafka.nodes):
            if node.log_path is None or not node.log_path.exists():
                continue
            text = node.log_path.read_text(encoding="utf-8", errors="replace")
            for match in _ACTIVE_CONTROLLER.finditer(text):
                epoch = int(match.group("epoch"))
                if best is None or epoch > best[0]:
                    best = (epoch, index)
        return None if best is None else best[1]

    def thaw_all(self) -> None:
        for node in self.kafka.nodes:
            node.signal(signal.SIGCONT)


def cluster_port_block(size: int) -> int:
    """First of ``size`` consecutive free ports *below* the kernel's ephemeral range.

    A killed node's ports stay free while it is down; were they ephemeral, a client's outgoing
    connection (or a self-connect to the dead port) could take one and the restart fail."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    chooser = random.Random()
    for _ in range(100):
        base = chooser.randrange(20000, max(20001, low - size))
        try:
            with contextlib.ExitStack() as probes:
                for port in range(base, base + size):
                    probe = probes.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    return free_port_block(size)


@contextlib.contextmanager
def kafka_cluster(storage: Path) -> Iterator[ClusterHandle]:
    """A fresh three-node cluster on six free loopback ports; stopped (and thawed) at the end."""
    kafka = KafkaCluster(storage / "kafka", cluster_port_block(2 * SIZE), size=SIZE)
    handle = ClusterHandle(kafka, storage / "logs")
    started = time.monotonic()
    kafka.start(handle.log_dir)
    try:
        handle.wait_registered()
        print(
            f"\ncluster: {SIZE} nodes on {kafka.bootstrap}, up in {time.monotonic() - started:.1f}s"
        )
        yield handle
    finally:
        gc.collect()
        handle.thaw_all()
        kafka.stop()


def restart_services(system: System, timeout_s: float = 120.0) -> float:
    """A new supervisor over the same settings (same data dir, topics, ports); seconds to ready.

    The old supervisor's processes must be gone (killed or stopped)."""
    started = time.monotonic()
    # The old supervisor stands for the `itinerant up` that died with the power: let go of the
    # data directory as its death would (its processes are gone already).
    system.supervisor.stop(grace_s=0.1)
    supervisor = Supervisor(system.settings, start_broker=False)
    system.supervisor = supervisor
    try:
        supervisor.start()
        supervisor.wait_ready(timeout_s)
    except BaseException:
        supervisor.stop()
        raise
    return time.monotonic() - started


# --- publishing on a schedule, and what came back --------------------------------------------


@dataclass
class Publisher:
    """Publishes ``requests`` evenly over ``spread_s``; records send and acknowledgement times.

    The producer is patient (``message.timeout.ms`` 180 s): a request published while the cluster
    is down waits in its queue and is delivered once a leader answers."""

    settings: Settings
    requests: list[TripRequest]
    spread_s: float
    sent_at: dict[str, float] = field(default_factory=dict)
    acked_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0

    def __post_init__(self) -> None:
        self._producer = Producer(
            {
                **quiet_client_config(
                    self.settings.kafka_bootstrap_servers, self.settings.broker_timeout_s
                ),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 180_000,
            }
        )

    @property
    def saga_ids(self) -> set[str]:
        return {str(r.request_id) for r in self.requests}

    @property
    def done(self) -> bool:
        return len(self.sent_at) == len(self.requests)

    def step(self) -> None:
        """Publish what is due by now (call often); serve delivery reports."""
        now = time.monotonic()
        if not self.started:
            self.started = now
        due = min(
            len(self.requests), int((now - self.started) / self.spread_s * len(self.requests)) + 1
        )
        while len(self.sent_at) < due:
            request = self.requests[len(self.sent_at)]
            saga_id = str(request.request_id)
            envelope = Envelope(
                id=saga_id + "-request",
                type="itinerant.request.v1",
                source="/tests/cluster-faults",
                saga_id=saga_id,
                data=request.model_dump_json(exclude_none=True).encode(),
            )
            self._producer.produce(
                self.settings.requests_topic,
                value=envelope.data,
                key=saga_id.encode(),
                headers=envelope.headers(),
                on_delivery=self._report(saga_id),
            )
            self.sent_at[saga_id] = time.monotonic()
        self._producer.poll(0)

    def _report(self, saga_id: str) -> Any:
        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self.errors.append(f"{saga_id}: {err}")
            else:
                self.acked_at[saga_id] = time.monotonic()

        return report

    def flush(self, timeout_s: float) -> None:
        left = self._producer.flush(timeout_s)
        assert left == 0, f"{left} request(s) never acknowledged in {timeout_s:.0f}s"
        assert not self.errors, self.errors[:5]

    def ack_latencies(self, since: float, until: float) -> list[float]:
        """Acknowledgement delays of the requests sent in [since, until)."""
        return [
            self.acked_at[s] - t
            for s, t in self.sent_at.items()
            if since <= t < until and s in self.acked_at
        ]

    def unacked_at(self, moment: float) -> int:
        """Requests sent before ``moment`` and acknowledged after it (or never)."""
        return sum(
            1
            for s, t in self.sent_at.items()
            if t < moment and self.acked_at.get(s, float("inf")) >= moment
        )


@dataclass(frozen=True)
class Result:
    saga_id: str
    status: str | None
    created: float  # the record's timestamp (when the coordinator produced it), monotonic clock
    arrived: float  # when this process's reader got it


class ResultWatcher:
    """Reads the results topic in a thread from the start of the run: the first result of every
    saga of ``saga_ids``, with when it was produced and when it arrived here."""

    def __init__(self, settings: Settings, saga_ids: set[str]) -> None:
        self.settings = settings
        self.saga_ids = set(saga_ids)
        self.results: dict[str, Result] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="results-watcher", daemon=True)
        self._consumer = Consumer(
            {
                **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
                "group.id": f"itinerant-test-results-{time.time_ns()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
                "allow.auto.create.topics": False,
            }
        )
        metadata = self._consumer.list_topics(timeout=settings.broker_timeout_s * 2)
        topic = settings.results_topic
        self._consumer.assign(
            [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
        )
        self._thread.start()

    def _run(self) -> None:
        offset = time.monotonic() - time.time()  # record timestamps are wall clock
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None or message.error():
                continue
            arrived = time.monotonic()
            key = (message.key() or b"").decode()
            if key not in self.saga_ids or key in self.results:
                continue
            try:
                value = json.loads(message.value() or b"null")
            except ValueError:
                value = None
            status = value.get("status") if isinstance(value, dict) else None
            _kind, stamp_ms = message.timestamp()
            with self._lock:
                self.results[key] = Result(key, status, stamp_ms / 1000 + offset, arrived)

    def missing(self) -> set[str]:
        with self._lock:
            return self.saga_ids - self.results.keys()

    def answered(self) -> int:
        with self._lock:
            return len(self.results)

    def answered_before(self, moment: float) -> set[str]:
        with self._lock:
            return {s for s, r in self.results.items() if r.arrived < moment}

    def wait_all(self, timeout_s: float, supervisor: Supervisor | None = None) -> float:
        """Until every saga has a result (supervising, when given); when the last arrived."""
        deadline = time.monotonic() + timeout_s
        while self.missing():
            if time.monotonic() > deadline:
                pytest.fail(
                    f"after {timeout_s:.0f}s {len(self.missing())} of {len(self.saga_ids)} "
                    "saga(s) had no result"
                )
            if supervisor is not None:
                supervisor.supervise_once()
            time.sleep(0.2)
        with self._lock:
            return max(r.arrived for r in self.results.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()

    def __enter__(self) -> ResultWatcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def longest_gap(moments: list[float], since: float, until: float) -> float:
    """Longest interval inside [since, until] without any of ``moments``."""
    inside = sorted(m for m in moments if since <= m <= until)
    edges = [since, *inside, until]
    return max(b - a for a, b in itertools.pairwise(edges))


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.2f}s p99 {p99:.2f}s max {ordered[-1]:.2f}s"


def count_in_logs(log_dir: Path, needle: str) -> dict[str, int]:
    """Lines containing ``needle`` per service log."""
    counts: dict[str, int] = {}
    for path in sorted(log_dir.glob("*.log")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            hits = sum(1 for line in lines if needle in line)
        if hits:
            counts[path.stem] = hits
    return counts
