"""Faust, tuned for this system: the consumer fetch wait Faust hard-codes (1,500 ms) is replaced
by ``Settings.consumer_fetch_wait_ms``. Apache Kafka answers a waiting fetch as soon as data
arrives, so 500 ms costs nothing there; Tansu does not, so each hop would cost up to half the
wait and it gets 10 ms (docs/brokers.md)."""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def app_class(fetch_wait_ms: int) -> type[faust.App]:
    class _Thread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_wait_ms  # read by aiokafka's Fetcher at start()
            return consumer

    class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
        def _new_consumer_thread(self) -> Any:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

    class _Transport(faust_aiokafka.Transport):  # type: ignore[misc]
        Consumer = _Consumer

    class App(faust.App):  # type: ignore[misc]
        def _new_transport(self) -> Any:
            return _Transport(self.conf.broker_consumer, self)

    return App


def broker_url(bootstrap: str) -> str:
    """``a:9092,b:9092`` -> ``kafka://a:9092;kafka://b:9092`` (Faust's form)."""
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()
    )
