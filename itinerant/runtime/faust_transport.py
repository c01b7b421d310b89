"""Faust, tuned for this system.

- The consumer fetch wait Faust hard-codes (1,500 ms) is replaced by
  ``Settings.consumer_fetch_wait_ms``. Apache Kafka answers a waiting fetch as soon as data
  arrives, so 500 ms costs nothing there; Tansu does not, so each hop would cost up to half the
  wait and it gets 10 ms (docs/brokers.md).
- Transactional (``ITINERANT_PROCESSING_GUARANTEE=exactly_once``): the consumer reads committed
  records only, and Faust commits no offsets itself, since each transaction commits its own
  (runtime/transactions.py, docs/architecture.md#exactly-once-results).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from itinerant.runtime.transactions import Member


def app_class(fetch_wait_ms: int, transactional: bool = False) -> type[faust.App]:
    class _Thread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_wait_ms  # read by aiokafka's Fetcher at start()
            if transactional:
                consumer._isolation_level = "read_committed"  # likewise
            return consumer

        async def _commit(self, offsets: Mapping[Any, int]) -> bool:
            if transactional:  # committed with the outputs, in their transaction
                now = time.monotonic()  # and Faust's check of commits not falling behind
                self.tp_last_committed_at.update({tp: now for tp in offsets})
                return True
            return bool(await super()._commit(offsets))

    class _Consumer(faust_aiokafka.Consumer):  # type: ignore[misc]
        def _new_consumer_thread(self) -> Any:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

        def group_member(self) -> Member | None:
            """This process's membership of its consumer group, once it joined."""
            consumer = getattr(self._thread, "_consumer", None)
            coordinator = getattr(consumer, "_coordinator", None)
            if coordinator is None or coordinator.generation < 0 or not coordinator.member_id:
                return None
            return Member(coordinator.group_id, coordinator.generation, coordinator.member_id)

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
