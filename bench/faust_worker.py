"""A bare faust-streaming worker hosting one or more forwarding agents of the Faust chain.

Run as ``python -m bench.faust_worker BOOTSTRAP APP_ID DATADIR FIRST LAST TOPIC0,TOPIC1,...
[FETCH_WAIT_MS]``: it hosts agents FIRST..LAST (1-based); agent i consumes topic i-1 and forwards
key, value and headers to topic i. No runtime, tables or web server: only what a bare agent
needs. The consumer fetch wait (Faust hard-codes 1,500 ms) is FETCH_WAIT_MS, default 10 ms; the
harness passes the broker's, as the services use it (``bench.brokers.fetch_wait_ms``).
"""

from __future__ import annotations

import sys
from typing import Any

import faust
from faust.transport.drivers import aiokafka as fa

from bench.security import faust_broker_credentials

FETCH_WAIT_MS = 10


class _Thread(fa.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        c = super()._create_worker_consumer(transport)
        c._fetch_max_wait_ms = FETCH_WAIT_MS  # faust hard-codes 1,500 ms; main() may change it
        return c


class _Consumer(fa.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> Any:
        return _Thread(self, loop=self.loop, beacon=self.beacon)


class _Transport(fa.Transport):  # type: ignore[misc]
    Consumer = _Consumer


class App(faust.App):  # type: ignore[misc]
    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def build_app(
    bootstrap: str, app_id: str, datadir: str, first: int, last: int, topics: list[str]
) -> Any:
    app = App(
        app_id,
        broker=f"kafka://{bootstrap}",
        broker_credentials=faust_broker_credentials(),
        datadir=datadir,
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        producer_linger=0.005,
    )

    def make_agent(i: int) -> None:
        src = app.topic(topics[i - 1], key_serializer="raw", value_serializer="raw")
        dst = app.topic(topics[i], key_serializer="raw", value_serializer="raw")

        async def forward(stream: Any) -> None:
            async for event in stream.events():
                await dst.send(key=event.key, value=event.value, headers=event.headers)

        forward.__name__ = f"hop{i}"
        forward.__qualname__ = f"hop{i}"
        app.agent(src, name=f"hop{i}", concurrency=1)(forward)

    for i in range(first, last + 1):
        make_agent(i)
    return app


def main(argv: list[str]) -> int:
    global FETCH_WAIT_MS
    bootstrap, app_id, datadir, first, last, topic_csv = argv[:6]
    if len(argv) > 6:
        FETCH_WAIT_MS = int(argv[6])
    app = build_app(bootstrap, app_id, datadir, int(first), int(last), topic_csv.split(","))
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
