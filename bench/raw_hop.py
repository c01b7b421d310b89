"""One hop of the raw chain: consume a topic, produce every message (headers kept) to the next.

Run as ``python -m bench.raw_hop BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP [FETCH_WAIT_MS]`` (default
10 ms; the harness passes the broker's, ``bench.brokers.fetch_wait_ms``).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from confluent_kafka import Consumer, Producer

from bench.security import kafka_security


def main(argv: list[str]) -> int:
    bootstrap, in_topic, out_topic, group = argv[:4]
    fetch_wait_ms = int(argv[4]) if len(argv) > 4 else 10
    running = True

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **kafka_security(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": fetch_wait_ms,
            "fetch.min.bytes": 1,
            "log.connection.close": False,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            **kafka_security(),
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "log.connection.close": False,
        }
    )
    consumer.subscribe([in_topic])
    try:
        while running:
            # consume() waits for the full timeout unless the batch fills: block on poll() for
            # the first message, then drain what is already fetched without waiting.
            first = consumer.poll(0.1)
            if first is None:
                producer.poll(0)
                continue
            for m in [first, *consumer.consume(num_messages=500, timeout=0)]:
                if m.error():
                    continue
                while True:
                    try:
                        producer.produce(out_topic, m.value(), key=m.key(), headers=m.headers())
                        break
                    except BufferError:
                        producer.poll(0.001)
            producer.poll(0)
    finally:
        producer.flush(5)
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
