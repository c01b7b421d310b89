"""Broker slowdown curve: transit time of one produce->consume hop on one partition against the
number of record batches already stored in that partition.

Tansu (memory engine) keeps every batch forever and lists all of them on each non-empty fetch,
so the cost of one hop grows with what the partition holds; Apache Kafka indexes its log, so its
curve should stay flat (the same curve on it is the control). The partition is filled with
single-message batches (linger 0, flush after every message); at each level a few closed-loop
probes (send one, wait for it, pause) measure the transit time. The consumer's fetch wait is the
broker's (``bench.brokers.fetch_wait_ms``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.brokers import fetch_wait_ms, make_broker
from bench.loadgen import LatencyStats
from bench.security import kafka_security

QUICK_LEVELS = (0, 1000, 2000, 4000)
FULL_LEVELS = (0, 1000, 2000, 4000, 8000, 12000)


@dataclass
class CurvePoint:
    batches: int  # batches stored in the partition when the probes started
    fill_s: float  # seconds it took to add the batches since the previous level
    latency: LatencyStats
    lost: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency"] = self.latency.to_dict()
        return d


def measure(
    levels: tuple[int, ...] = QUICK_LEVELS,
    probes: int = 30,
    gap_s: float = 0.02,
    probe_timeout_s: float = 3.0,
    log_path: Path | None = None,
    broker_kind: str = "tansu",
    warm_s: float = 2.0,
) -> list[CurvePoint]:
    points: list[CurvePoint] = []
    with make_broker(broker_kind, log_path=log_path) as broker:
        broker.warm(warm_s)  # on its own topic: the measured partition starts empty
        topic = "bench.curve.t0"
        broker.create_topics([topic], partitions=1)
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                **kafka_security(),
                "linger.ms": 0,
                "log.connection.close": False,
            }
        )
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                **kafka_security(),
                "group.id": "bench-curve",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms(broker_kind),
                "fetch.min.bytes": 1,
                "log.connection.close": False,
            }
        )
        stored = 0  # one message per batch, so this is also the next offset
        try:
            for level in levels:
                t_fill = time.monotonic()
                while stored < level:
                    producer.produce(topic, b"fill", key=b"f")
                    producer.flush(5)  # one batch per message
                    stored += 1
                fill_s = time.monotonic() - t_fill
                level_batches = stored
                consumer.assign([TopicPartition(topic, 0, stored)])
                lat: list[int] = []
                lost = 0
                for i in range(probes):
                    tag = f"probe-{level}-{i}".encode()
                    t0 = time.monotonic_ns()
                    producer.produce(topic, tag, key=b"p")
                    producer.poll(0)
                    stored += 1
                    deadline = time.monotonic() + probe_timeout_s
                    got = False
                    while time.monotonic() < deadline:
                        m = consumer.poll(0.05)
                        if m is None or m.error():
                            continue
                        if m.value() == tag:
                            lat.append(time.monotonic_ns() - t0)
                            got = True
                            break
                    if not got:
                        lost += 1
                    producer.flush(5)
                    time.sleep(gap_s)
                points.append(
                    CurvePoint(level_batches, round(fill_s, 2), LatencyStats.of_ns(lat), lost)
                )
        finally:
            consumer.close()
            producer.flush(5)
    return points
