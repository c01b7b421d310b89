"""Open-loop load generation, saturation runs and the latency sink.

Every message carries its *intended* send time (monotonic ns, header ``bench-t``) and the id of
the run it belongs to (``bench-run``). Latency is measured at the sink from the intended send time,
not from the moment the generator managed to send it, so a stalled generator or a back-pressured
client cannot hide queueing delay (no coordinated omission).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.security import kafka_security

HDR_TIME = "bench-t"
HDR_RUN = "bench-run"

Encoded = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class Codec(Protocol):
    """How a scenario's messages carry the run id and intended send time in and out.

    ``encode`` builds (key, value, headers) of an entry message; ``decode`` reads an exit message
    (a confluent ``Message``) and returns (run id, intended send time in monotonic ns), or ``None``
    for a message that is not one of ours (or not the final one).
    """

    def encode(self, run: str, seq: int, intended_ns: int) -> Encoded: ...

    def decode(self, msg: Any) -> tuple[str, int] | None: ...


class HeaderCodec:
    """The baseline codec: a fixed payload, run id and time in headers passed through."""

    def encode(self, run: str, seq: int, intended_ns: int) -> Encoded:
        headers = [(HDR_RUN, run.encode()), (HDR_TIME, str(intended_ns).encode())]
        return str(seq).encode(), PAYLOAD, headers

    def decode(self, msg: Any) -> tuple[str, int] | None:
        hdrs = dict(msg.headers() or [])
        run, t = hdrs.get(HDR_RUN), hdrs.get(HDR_TIME)
        if run is None or t is None:
            return None
        return run.decode(), int(t)


DEFAULT_CODEC = HeaderCodec()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


@dataclass
class LatencyStats:
    """Latency summary in milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of_ns(cls, values_ns: Sequence[int]) -> LatencyStats:
        ms = sorted(v / 1e6 for v in values_ns)
        if not ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            n=len(ms),
            p50=round(percentile(ms, 50), 3),
            p95=round(percentile(ms, 95), 3),
            p99=round(percentile(ms, 99), 3),
            max=round(ms[-1], 3),
            mean=round(sum(ms) / len(ms), 3),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Run:
    intended: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)


class Sink:
    """Consumer of a scenario's exit topic, in a background thread.

    It assigns every partition from offset 0 (no group join, so it is ready at once and never
    misses a message) and files each message under its run id. ``fetch_wait_ms`` is the
    broker's (``bench.brokers.fetch_wait_ms``): 10 ms on Tansu, where a fetch waits it out
    whatever arrives; Kafka answers a waiting fetch as soon as data arrives.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        codec: Codec = DEFAULT_CODEC,
        fetch_wait_ms: int = 10,
    ) -> None:
        self.topic = topic
        self.codec = codec
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                **kafka_security(),
                "group.id": f"bench-sink-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": fetch_wait_ms,
                "fetch.min.bytes": 1,
                "log.connection.close": False,
            }
        )
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._runs: dict[str, _Run] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sink-{topic}", daemon=True)
        self.foreign = 0  # messages without our headers

    def start(self) -> Sink:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            # consume() would wait out its whole timeout unless the batch fills: poll for the
            # first message, then drain what is already fetched without waiting.
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            now = time.monotonic_ns()
            msgs = [first, *self._consumer.consume(num_messages=1000, timeout=0)]
            with self._cond:
                for m in msgs:
                    if m.error():
                        continue
                    try:
                        got = self.codec.decode(m)
                    except Exception:
                        got = None
                    if got is None:
                        self.foreign += 1
                        continue
                    run, t = got
                    r = self._runs.setdefault(run, _Run())
                    r.intended.append(t)
                    r.received.append(now)
                self._cond.notify_all()

    def count(self, run: str) -> int:
        with self._cond:
            r = self._runs.get(run)
            return len(r.received) if r else 0

    def wait(self, run: str, n: int, timeout_s: float) -> _Run:
        """Wait until ``n`` messages of ``run`` arrived (or the deadline); return a copy."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                r = self._runs.get(run)
                if r is not None and len(r.received) >= n:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            r = self._runs.get(run, _Run())
            return _Run(list(r.intended), list(r.received))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


def make_producer(bootstrap: str, linger_ms: float = 5.0) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            **kafka_security(),
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": 1_000_000,
            "log.connection.close": False,
        }
    )


PAYLOAD = b'{"bench":true,"pad":"' + b"x" * 200 + b'"}'


def _send(
    producer: Producer,
    topic: str,
    run: str,
    seq: int,
    intended_ns: int,
    codec: Codec = DEFAULT_CODEC,
) -> None:
    key, value, headers = codec.encode(run, seq, intended_ns)
    while True:
        try:
            producer.produce(topic, value, key=key, headers=headers)
            return
        except BufferError:
            producer.poll(0.001)


@dataclass
class PhaseResult:
    """Outcome of one measured phase (an offered load or a saturation run)."""

    kind: str  # "load" or "saturation"
    offered_rate: float | None  # msg/s, None for saturation
    sent: int
    received: int
    duration_s: float
    throughput: float  # received msg/s over the phase
    latency: LatencyStats
    max_send_lag_ms: float  # how far the generator fell behind its schedule
    cpu_s: dict[str, float] = field(default_factory=dict)  # per role, during the phase
    cpu_s_per_1k: dict[str, float] = field(default_factory=dict)
    # each scenario process apart (e.g. the coordinator against the agents), during the phase
    cpu_s_by_process: dict[str, float] = field(default_factory=dict)
    run: str = ""  # the run id its messages carry (to wait for its stragglers: ``settle``)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency"] = self.latency.to_dict()
        return d


def new_run_id(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def open_loop(
    producer: Producer,
    sink: Sink,
    topic: str,
    rate: float,
    duration_s: float,
    drain_timeout_s: float = 15.0,
    codec: Codec = DEFAULT_CODEC,
) -> PhaseResult:
    """Send at a fixed arrival rate for ``duration_s`` regardless of how the system keeps up."""
    run = new_run_id(f"load{int(rate)}")
    total = max(1, int(rate * duration_s))
    interval_ns = 1e9 / rate
    t0 = time.monotonic_ns() + 5_000_000
    max_lag = 0
    sent = 0
    while sent < total:
        now = time.monotonic_ns()
        due = min(total, int((now - t0) / interval_ns) + 1) if now >= t0 else 0
        while sent < due:
            intended = t0 + int(sent * interval_ns)
            max_lag = max(max_lag, now - intended)
            _send(producer, topic, run, sent, intended, codec)
            sent += 1
        producer.poll(0)
        if sent < total:
            next_ns = t0 + int(sent * interval_ns)
            gap = (next_ns - time.monotonic_ns()) / 1e9
            if gap > 0:
                time.sleep(min(gap, 0.002))
    producer.flush(10)
    r = sink.wait(run, total, drain_timeout_s)
    lat = [rc - it for it, rc in zip(r.intended, r.received, strict=True)]
    span = (max(r.received) - t0) / 1e9 if r.received else math.nan
    return PhaseResult(
        kind="load",
        offered_rate=rate,
        sent=total,
        received=len(lat),
        duration_s=round(span, 3),
        throughput=round(len(lat) / span, 1) if r.received else 0.0,
        latency=LatencyStats.of_ns(lat),
        max_send_lag_ms=round(max_lag / 1e6, 3),
        run=run,
    )


def saturation(
    producer: Producer,
    sink: Sink,
    topic: str,
    n: int,
    drain_timeout_s: float = 30.0,
    codec: Codec = DEFAULT_CODEC,
) -> PhaseResult:
    """Send ``n`` messages as fast as possible; throughput = n / (last arrival - first send)."""
    run = new_run_id("sat")
    t0 = time.monotonic_ns()
    for i in range(n):
        _send(producer, topic, run, i, time.monotonic_ns(), codec)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    t_sent = time.monotonic_ns()
    r = sink.wait(run, n, drain_timeout_s)
    lat = [rc - it for it, rc in zip(r.intended, r.received, strict=True)]
    span = (max(r.received) - t0) / 1e9 if r.received else math.nan
    return PhaseResult(
        kind="saturation",
        offered_rate=None,
        sent=n,
        received=len(lat),
        duration_s=round(span, 3),
        throughput=round(len(lat) / span, 1) if r.received else 0.0,
        latency=LatencyStats.of_ns(lat),
        max_send_lag_ms=round((t_sent - t0) / 1e6, 3),
    )


def warm_up(
    producer: Producer,
    sink: Sink,
    topic: str,
    timeout_s: float,
    burst: int = 20,
    codec: Codec = DEFAULT_CODEC,
) -> float:
    """Block until the chain delivers end to end; return seconds it took.

    Sends one probe every 0.25 s until one arrives (consumer groups joined), then a burst of
    ``burst`` keyed messages (all partitions) and waits for all of them.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    run = new_run_id("warm")
    seq = 0
    while sink.count(run) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no warm-up message reached {sink.topic} in {timeout_s}s")
        _send(producer, topic, run, seq, time.monotonic_ns(), codec)
        producer.flush(5)
        seq += 1
        sink.wait(run, 1, 0.25)
    burst_run = new_run_id("warmburst")
    for i in range(burst):
        _send(producer, topic, burst_run, i, time.monotonic_ns(), codec)
    producer.flush(5)
    got = sink.wait(burst_run, burst, max(1.0, deadline - time.monotonic()))
    if len(got.received) < burst:
        raise TimeoutError(f"warm-up burst incomplete: {len(got.received)}/{burst}")
    return time.monotonic() - start


def settle(sink: Sink, run: str, quiet_s: float = 2.0, timeout_s: float = 60.0) -> float:
    """Wait until no more messages of ``run`` arrive for ``quiet_s`` (a failed probe's backlog
    drained), at most ``timeout_s``; return the seconds waited."""
    t0 = time.monotonic()
    last, since = sink.count(run), time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        time.sleep(0.2)
        now = sink.count(run)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return round(time.monotonic() - t0, 2)
