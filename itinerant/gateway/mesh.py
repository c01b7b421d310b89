"""The gateway's I/O with the mesh: publish requests and cancels (CloudEvents, with the caller's
trace context), read the coordinator's saga view, and follow the results topic (a consumer of
its own, assigned every partition from the beginning, in no consumer group)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from opentelemetry import context as otel_context

from itinerant.brokers.connection import quiet_client_config
from itinerant.errors import BrokerUnavailable
from itinerant.observability import tracing
from itinerant.settings import Settings
from itinerant.wire.control import DISCARD_REQUESTED
from itinerant.wire.envelope import Envelope
from itinerant.wire.ids import new_id
from itinerant.wire.request import REQUEST_TYPE as REQUEST_NAME
from itinerant.wire.request import Request

from .config import SOURCE, GatewayConfig
from .tasks import CANCEL_WHY

log = logging.getLogger(__name__)

REQUEST_TYPE = f"{REQUEST_NAME}.v1"
RESULTS_KEPT = 10_000


class CoordinatorUnavailable(RuntimeError):
    """The coordinator's saga view did not answer."""


class Publisher:
    """One long-lived producer; each publish waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = Producer(
            {
                **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
                "message.timeout.ms": int(settings.broker_timeout_s * 2000),
                "linger.ms": 2,
            }
        )
        self._lock = threading.Lock()

    def _send(self, topic: str, envelope: Envelope) -> None:
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        message = envelope.to_message(topic, self.settings.max_slip_bytes)
        with self._lock:
            self._producer.produce(
                topic,
                value=message.value,
                key=message.key,
                headers=message.headers,
                on_delivery=report,
            )
            remaining = self._producer.flush(self.settings.broker_timeout_s * 2)
        if remaining or errors:
            raise BrokerUnavailable(
                f"Kafka at {self.settings.kafka_bootstrap_servers} did not take the message: "
                f"{errors[0] if errors else 'timed out'}"
            )

    def request_envelope(
        self,
        request: Request,
        saga_id: str,
        traceparent: str | None,
        tracestate: str | None,
    ) -> Envelope:
        """What ``publish_request`` sends, plus this hop's trace context (child of the caller)."""
        body = request.model_copy(update={"request_id": saga_id})
        message_id = new_id()
        # The caller's context is the parent (the SDK's own server span starts a new trace).
        token = (
            otel_context.attach(tracing.extract(traceparent, tracestate)) if traceparent else None
        )
        try:
            parent, state = tracing.send_traceparent(
                self.settings.requests_topic,
                message_id=message_id,
                saga_id=saga_id,
                fallback=traceparent,
                fallback_state=tracestate,
            )
        finally:
            if token is not None:
                otel_context.detach(token)
        return Envelope(
            id=message_id,
            type=REQUEST_TYPE,
            source=SOURCE,
            saga_id=saga_id,
            data=body.model_dump_json(exclude_none=True).encode(),
            traceparent=parent,
            tracestate=state,
        )

    async def publish_request(
        self,
        request: Request,
        saga_id: str,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Envelope:
        envelope = self.request_envelope(request, saga_id, traceparent, tracestate)
        await asyncio.to_thread(self._send, self.settings.requests_topic, envelope)
        return envelope

    def discard_envelope(self, saga_id: str, traceparent: str | None = None) -> Envelope:
        data = {"saga_id": saga_id, "why": CANCEL_WHY, "entry": None, "by": "a2a"}
        return Envelope(
            id=new_id(),
            type=DISCARD_REQUESTED,
            source=SOURCE,
            saga_id=saga_id,
            data=json.dumps(data).encode(),
            traceparent=traceparent,
        )

    async def publish_cancel(self, saga_id: str, traceparent: str | None = None) -> Envelope:
        """``itinerant.saga.discard_requested.v1`` on the events topic: compensate the saga."""
        envelope = self.discard_envelope(saga_id, traceparent)
        await asyncio.to_thread(self._send, self.settings.events_topic, envelope)
        return envelope

    def close(self) -> None:
        with self._lock:
            self._producer.flush(self.settings.broker_timeout_s)


class ResultsFollower:
    """Reads the results topic from the beginning in a thread: saga id -> latest result.

    Results are final facts written once by the coordinator (a repeat after a crash carries the
    same content), so remembering them is not a copy of state that can drift.
    """

    def __init__(self, settings: Settings, kept: int = RESULTS_KEPT) -> None:
        self.settings = settings
        self.kept = kept
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-results", daemon=True)
        self.assigned = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.broker_timeout_s + 2)

    def get(self, saga_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._results.get(saga_id)

    async def wait(self, saga_id: str, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.get(saga_id)
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for seen in self._records():
                    self.assigned.set()
                    if self._stop.is_set():
                        return
                    if seen is None:
                        continue
                    key, value = seen
                    with self._lock:
                        self._results[key] = value
                        self._results.move_to_end(key)
                        while len(self._results) > self.kept:
                            self._results.popitem(last=False)
            except Exception as exc:  # the broker may be away; keep trying until stopped
                log.warning("reading %s failed (%s); retrying", self.settings.results_topic, exc)
                self._stop.wait(2.0)

    def _records(self, poll_s: float = 0.1) -> Iterator[tuple[str, dict[str, Any]] | None]:
        """(saga id, result) for every record of the results topic, from its beginning; None on
        an idle poll or a record that is not a keyed JSON object (so the caller can stop)."""
        settings = self.settings
        topic = settings.results_topic
        consumer = Consumer(
            {
                **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
                "group.id": f"itinerant-gateway-{new_id()}",  # required by the client; never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": settings.consumer_fetch_wait_ms,
                "allow.auto.create.topics": False,
            }
        )
        try:
            # All topics, not this one by name: on Tansu naming a topic would create it.
            metadata = consumer.list_topics(timeout=settings.broker_timeout_s)
            if topic not in metadata.topics:
                raise BrokerUnavailable(
                    f"topic {topic} does not exist; run `itinerant topics create`"
                )
            partitions = metadata.topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            while True:
                message = consumer.poll(poll_s)
                if message is None or message.error():
                    yield None
                    continue
                yield _keyed_json(message.key(), message.value())
        finally:
            consumer.close()


def _keyed_json(key: bytes | None, raw: bytes | None) -> tuple[str, dict[str, Any]] | None:
    if not key or not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return (key.decode(errors="replace"), value) if isinstance(value, dict) else None


class SagaView:
    """The coordinator's HTTP saga view (the single owner of saga state)."""

    def __init__(self, config: GatewayConfig, timeout_s: float = 5.0) -> None:
        self.base_url = config.coordinator_url
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)

    async def get(self, saga_id: str) -> dict[str, Any] | None:
        try:
            response = await self._client.get(f"/sagas/{quote(saga_id, safe='')}")
        except httpx.HTTPError as exc:
            raise CoordinatorUnavailable(
                f"the coordinator's saga view at {self.base_url} does not answer ({exc}); "
                "is the coordinator running?"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CoordinatorUnavailable(
                f"the coordinator's saga view answered HTTP {response.status_code}"
            )
        body = response.json()
        return body if isinstance(body, dict) else None

    async def close(self) -> None:
        await self._client.aclose()
