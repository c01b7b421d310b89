"""The gateway's I/O with the mesh: publish requests and cancels (CloudEvents, with the caller's
trace context, on behalf of the caller: ``ce_customer`` names it and the gateway signs as
principal ``gateway``; docs/security-gateway.md), and read the coordinator's saga view with an
operator's token. Following the topics is :mod:`.feed`'s job."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any
from urllib.parse import quote

import httpx
from confluent_kafka import Producer
from opentelemetry import context as otel_context

from itinerant.brokers.client_security import quiet_config
from itinerant.errors import BrokerUnavailable
from itinerant.observability import tracing
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.wire.control import DISCARD_REQUESTED
from itinerant.wire.envelope import Envelope, OutMessage
from itinerant.wire.ids import new_id
from itinerant.wire.request import REQUEST_TYPE as REQUEST_NAME
from itinerant.wire.request import Request

from .config import SERVICE, SOURCE, GatewayConfig
from .tasks import CANCEL_WHY

log = logging.getLogger(__name__)

REQUEST_TYPE = f"{REQUEST_NAME}.v1"


class CoordinatorUnavailable(RuntimeError):
    """The coordinator's saga view did not answer (the text names where: for the log only)."""


class Publisher:
    """One long-lived producer; each publish waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = Producer(
            {
                **quiet_config(settings),
                "message.timeout.ms": int(settings.broker_timeout_s * 2000),
                "linger.ms": 2,
            }
        )
        self._lock = threading.Lock()

    def signed(self, topic: str, envelope: Envelope) -> OutMessage:
        """``envelope`` as the record the gateway produces, signed as principal ``gateway``."""
        message = envelope.to_message(topic, self.settings.max_slip_bytes)
        return mesh_keys(self.settings).sign(message, SERVICE)

    def _send(self, topic: str, envelope: Envelope) -> None:
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        message = self.signed(topic, envelope)
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
        customer: str,
        traceparent: str | None,
        tracestate: str | None,
    ) -> Envelope:
        """What ``publish_request`` sends for ``customer`` (the caller's principal), plus this
        hop's trace context (child of the caller)."""
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
            customer=customer,
        )

    async def publish_request(
        self,
        request: Request,
        saga_id: str,
        customer: str,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Envelope:
        envelope = self.request_envelope(request, saga_id, customer, traceparent, tracestate)
        await asyncio.to_thread(self._send, self.settings.requests_topic, envelope)
        return envelope

    def discard_envelope(
        self, saga_id: str, customer: str, traceparent: str | None = None
    ) -> Envelope:
        data = {"saga_id": saga_id, "why": CANCEL_WHY, "entry": None, "by": "a2a"}
        return Envelope(
            id=new_id(),
            type=DISCARD_REQUESTED,
            source=SOURCE,
            saga_id=saga_id,
            data=json.dumps(data).encode(),
            traceparent=traceparent,
            customer=customer,
        )

    async def publish_cancel(
        self, saga_id: str, customer: str, traceparent: str | None = None
    ) -> Envelope:
        """``itinerant.saga.discard_requested.v1`` on the events topic, for ``customer``:
        compensate the saga."""
        envelope = self.discard_envelope(saga_id, customer, traceparent)
        await asyncio.to_thread(self._send, self.settings.events_topic, envelope)
        return envelope

    def close(self) -> None:
        with self._lock:
            self._producer.flush(self.settings.broker_timeout_s)


class SagaView:
    """The coordinator's HTTP saga view (the single owner of saga state)."""

    def __init__(self, config: GatewayConfig, timeout_s: float = 5.0) -> None:
        self.base_url = config.coordinator_url
        token = config.view_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, headers=headers)
        self.reads = 0

    async def get(self, saga_id: str) -> dict[str, Any] | None:
        self.reads += 1
        try:
            response = await self._client.get(f"/sagas/{quote(saga_id, safe='')}")
        except httpx.HTTPError as exc:
            raise CoordinatorUnavailable(
                f"the coordinator's saga view at {self.base_url} does not answer ({exc}); "
                "is the coordinator running?"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise CoordinatorUnavailable(
                f"the coordinator's saga view at {self.base_url} refused the gateway (HTTP "
                f"{response.status_code}): give the gateway an operator's token "
                "(ITINERANT_OPERATOR_TOKENS with ITINERANT_OPERATOR)"
            )
        if response.status_code != 200:
            raise CoordinatorUnavailable(
                f"the coordinator's saga view answered HTTP {response.status_code}"
            )
        body = response.json()
        return body if isinstance(body, dict) else None

    async def recent(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` sagas (in ``state`` when given), as the view lists them."""
        params: dict[str, str | int] = {"limit": limit}
        if state is not None:
            params["state"] = state
        self.reads += 1
        try:
            response = await self._client.get("/sagas", params=params)
        except httpx.HTTPError as exc:
            raise CoordinatorUnavailable(
                f"the coordinator's saga view at {self.base_url} does not answer ({exc}); "
                "is the coordinator running?"
            ) from exc
        if response.status_code != 200:
            raise CoordinatorUnavailable(
                f"the coordinator's saga view answered HTTP {response.status_code}"
            )
        body = response.json()
        sagas = body.get("sagas") if isinstance(body, dict) else None
        return [s for s in sagas if isinstance(s, dict)] if isinstance(sagas, list) else []

    async def close(self) -> None:
        await self._client.aclose()
