"""The gateway with the mesh faked (publisher, saga view, topic feed), for the unit tests of
the gateway over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from itinerant.gateway.app import Gateway, build
from itinerant.gateway.config import gateway_config
from itinerant.gateway.feed import MeshFeed
from itinerant.gateway.mesh import Publisher, SagaView
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope
from itinerant.wire.request import Request
from services.mesh import mesh as travel

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
OPERATOR = "operator-token-0123456789"
CALLERS = {"alice": SecretStr(ALICE), "bob": SecretStr(BOB)}
OPERATORS = {"operator": SecretStr(OPERATOR)}


#: What an A2A 1.0 client sends with every call.
V1 = {"A2A-Version": "1.0"}


def bearer(token: str) -> dict[str, str]:
    """The headers of an A2A 1.0 call by the caller with ``token``."""
    return {"authorization": f"Bearer {token}", **V1}


class FakePublisher(Publisher):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests: list[tuple[Envelope, str]] = []
        self.cancels: list[tuple[Envelope, str]] = []

    async def publish_request(
        self,
        request: Request,
        saga_id: str,
        customer: str,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Envelope:
        envelope = self.request_envelope(request, saga_id, customer, traceparent, tracestate)
        self.requests.append((envelope, customer))
        return envelope

    async def publish_cancel(
        self, saga_id: str, customer: str, traceparent: str | None = None
    ) -> Envelope:
        envelope = self.discard_envelope(saga_id, customer, traceparent)
        self.cancels.append((envelope, customer))
        return envelope

    def close(self) -> None:
        pass


class FakeView(SagaView):
    def __init__(self) -> None:
        self.sagas: dict[str, dict[str, Any]] = {}
        self.reads = 0
        self.error: Exception | None = None

    async def get(self, saga_id: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.sagas.get(saga_id)

    async def recent(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        self.reads += 1
        if self.error is not None:
            raise self.error
        found = [s for s in reversed(self.sagas.values()) if state in (None, s.get("state"))]
        return found[:limit]

    async def close(self) -> None:
        pass


class FakeFeed(MeshFeed):
    """The feed without its consumer thread: tests hand it records with ``publish``."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Harness:
    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.publisher = FakePublisher(settings)
        self.view = FakeView()
        self.feed = FakeFeed(settings)
        values: dict[str, Any] = {
            "gateway_tokens": CALLERS,
            "operator_tokens": OPERATORS,
            "gateway_max_body_bytes": 4096,
            "gateway_port": 18480,
        }
        values.update(overrides)
        self.config = gateway_config(settings, **values)
        self.gateway: Gateway = build(
            settings,
            self.config,
            mesh=travel,
            publisher=self.publisher,
            view=self.view,
            feed=self.feed,
        )


def trip() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / "trip.json").read_text())
    return loaded


def send_body(
    data: dict[str, Any] | None = None, method: str = "SendMessage", **extra: Any
) -> dict[str, Any]:
    """An A2A 1.0 SendMessage (or SendStreamingMessage) of a data part."""
    part = {"data": data or trip()}
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": method,
        "params": {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [part], **extra}},
    }


def send_body_v03(
    data: dict[str, Any] | None = None, method: str = "message/send"
) -> dict[str, Any]:
    """The same request as an A2A 0.3 client sends it."""
    part = {"kind": "data", "data": data or trip()}
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": method,
        "params": {"message": {"role": "user", "messageId": "m1", "parts": [part]}},
    }


def rpc(method: str, task_id: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 2, "method": method, "params": {"id": task_id}}


def sent_task(reply: dict[str, Any]) -> dict[str, Any]:
    """The task of a SendMessage reply (A2A 1.0: ``result.task``)."""
    task: dict[str, Any] = reply["result"]["task"]
    return task


def saga(saga_id: str, customer: str, state: str = "running", **extra: Any) -> dict[str, Any]:
    return {
        "saga_id": saga_id,
        "state": state,
        "customer": customer,
        "timeline": [{"event": "started", "at": "2026-01-01T00:00:00+00:00"}],
        "steps": [],
        **extra,
    }
