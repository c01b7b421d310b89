"""The gateway over HTTP with the mesh faked: card, JSON-RPC errors, token, body limit, cancel."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from itinerant.gateway.app import build
from itinerant.gateway.config import gateway_config
from itinerant.gateway.mesh import Publisher, ResultsFollower, SagaView
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope
from itinerant.wire.request import Request
from services.mesh import mesh as travel

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"
TOKEN = "s3cret"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FakePublisher(Publisher):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.requests: list[Envelope] = []
        self.cancels: list[Envelope] = []

    async def publish_request(
        self,
        request: Request,
        saga_id: str,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> Envelope:
        envelope = self.request_envelope(request, saga_id, traceparent, tracestate)
        self.requests.append(envelope)
        return envelope

    async def publish_cancel(self, saga_id: str, traceparent: str | None = None) -> Envelope:
        envelope = self.discard_envelope(saga_id, traceparent)
        self.cancels.append(envelope)
        return envelope

    def close(self) -> None:
        pass


class FakeView(SagaView):
    def __init__(self) -> None:
        self.sagas: dict[str, dict[str, Any]] = {}

    async def get(self, saga_id: str) -> dict[str, Any] | None:
        return self.sagas.get(saga_id)

    async def close(self) -> None:
        pass


class FakeResults(ResultsFollower):
    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def get(self, saga_id: str) -> dict[str, Any] | None:
        return self.results.get(saga_id)


class Harness:
    def __init__(self, settings: Settings, token: str | None) -> None:
        self.publisher = FakePublisher(settings)
        self.view = FakeView()
        self.results = FakeResults()
        config = gateway_config(
            settings, gateway_token=token, gateway_max_body_bytes=4096, gateway_port=18480
        )
        self.gateway = build(
            settings,
            config,
            mesh=travel,
            publisher=self.publisher,
            view=self.view,
            results=self.results,
        )


@pytest.fixture
def harness(settings: Settings) -> Iterator[tuple[Harness, TestClient]]:
    built = Harness(settings, None)
    with TestClient(built.gateway.app) as client:
        yield built, client


def send_body(data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    part = {"kind": "data", "data": data or json.loads((EXAMPLES / "trip.json").read_text())}
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "message/send",
        "params": {
            "message": {"role": "user", "messageId": "m1", "parts": [part], **extra},
        },
    }


def test_card(harness: tuple[Harness, TestClient]) -> None:
    _h, client = harness
    card = client.get("/.well-known/agent-card.json").json()
    assert card["capabilities"]["streaming"] is True
    assert card["protocolVersion"] == "0.3.0"
    assert card["url"] == "http://127.0.0.1:18480/"
    assert card["name"] == "travel"
    assert {s["id"] for s in card["skills"]} == {"plan-trip", "book-trip", "refund"}
    assert card["description"].startswith(travel.description)
    assert travel.request_help in card["description"]
    assert card["defaultInputModes"] == ["application/json", "text/plain"]
    assert "securitySchemes" not in card


def test_send_publishes_with_trace_context_and_returns_the_saga_task(
    harness: tuple[Harness, TestClient],
) -> None:
    h, client = harness
    reply = client.post("/", json=send_body(), headers={"traceparent": TRACEPARENT}).json()
    task = reply["result"]
    assert task["kind"] == "task" and task["status"]["state"] == "submitted"
    [sent] = h.publisher.requests
    assert sent.saga_id == task["id"] and sent.source == "/itinerant/gateway"
    assert sent.type == "itinerant.request.v1"
    assert (
        sent.traceparent is not None and sent.traceparent.split("-")[1] == TRACEPARENT.split("-")[1]
    )
    assert json.loads(sent.data)["request_id"] == task["id"]
    # not yet in the coordinator's view: still submitted, not "not found"
    got = client.post(
        "/", json={"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": task["id"]}}
    ).json()
    assert got["result"]["status"]["state"] == "submitted"


def test_invalid_request_is_invalid_params_and_nothing_is_published(
    harness: tuple[Harness, TestClient],
) -> None:
    h, client = harness
    reply = client.post("/", json=send_body({"origin": "MAD"})).json()
    assert reply["error"]["code"] == -32602
    assert "traveller" in reply["error"]["message"]
    assert h.publisher.requests == []


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", -32700, "not JSON"),
        (b"[1, 2]", -32600, "request object"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tasks/fly","params":{}}', -32601, "tasks/fly"),
        (b'{"jsonrpc":"2.0","id":1,"method":"tasks/get"}', -32602, ""),
        (b'{"jsonrpc":"1.0","id":1,"method":"tasks/get","params":{"id":"x"}}', -32600, ""),
    ],
)
def test_bad_json_rpc(
    harness: tuple[Harness, TestClient], body: bytes, code: int, words: str
) -> None:
    _h, client = harness
    reply = client.post("/", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 200
    assert reply.json()["error"]["code"] == code
    assert words in reply.json()["error"]["message"]


def test_unknown_task_and_push_notifications(harness: tuple[Harness, TestClient]) -> None:
    _h, client = harness
    got = client.post(
        "/", json={"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "nope"}}
    ).json()
    assert got["error"]["code"] == -32001
    push = client.post(
        "/",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tasks/pushNotificationConfig/get",
            "params": {"id": "nope"},
        },
    ).json()
    assert push["error"]["code"] == -32004


def test_oversized_body_is_413(harness: tuple[Harness, TestClient]) -> None:
    h, client = harness
    big = send_body({"traveller": {"name": "A"}, "text": "x" * 10_000})
    reply = client.post("/", json=big)
    assert reply.status_code == 413
    assert "4096" in reply.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"jsonrpc":"2.0",'
        yield b" " * 8000
        yield b"}"

    assert client.post("/", content=chunks()).status_code == 413
    assert h.publisher.requests == []


def test_cancel_publishes_the_discard_request(harness: tuple[Harness, TestClient]) -> None:
    h, client = harness
    h.view.sagas["s1"] = {
        "saga_id": "s1",
        "state": "running",
        "timeline": [],
        "steps": [],
        "traceparent": TRACEPARENT,
    }
    reply = client.post(
        "/", json={"jsonrpc": "2.0", "id": 1, "method": "tasks/cancel", "params": {"id": "s1"}}
    ).json()
    assert reply["result"]["id"] == "s1"
    [cancel] = h.publisher.cancels
    assert cancel.type == "itinerant.saga.discard_requested.v1"
    assert json.loads(cancel.data) == {
        "saga_id": "s1",
        "why": "cancelled by A2A client",
        "entry": None,
        "by": "a2a",
    }
    h.view.sagas["s1"]["state"] = "completed"
    again = client.post(
        "/", json={"jsonrpc": "2.0", "id": 1, "method": "tasks/cancel", "params": {"id": "s1"}}
    ).json()
    assert again["error"]["code"] == -32002


def test_token(settings: Settings) -> None:
    built = Harness(settings, TOKEN)
    with TestClient(built.gateway.app) as client:
        card = client.get("/.well-known/agent-card.json").json()  # the card stays public
        assert card["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert card["security"] == [{"bearer": []}]
        missing = client.post("/", json=send_body())
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = client.post("/", json=send_body(), headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert built.publisher.requests == []
        ok = client.post("/", json=send_body(), headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["result"]["kind"] == "task"


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("ITINERANT_GATEWAY_PORT", "9999")
    monkeypatch.setenv("ITINERANT_GATEWAY_TOKEN", "t")
    monkeypatch.setenv("ITINERANT_GATEWAY_HOST", "0.0.0.0")
    config = gateway_config(Settings(coordinator_http_port=settings.coordinator_http_port))
    assert (config.port, config.token, config.host) == (9999, "t", "0.0.0.0")
    assert config.public_url == "http://127.0.0.1:9999/"
    assert config.coordinator_url.endswith(f":{settings.coordinator_http_port}")


def test_the_mesh_defaults_to_the_configured_app(settings: Settings) -> None:
    assert settings.app == "services.mesh:mesh"
    built = build(
        settings, publisher=FakePublisher(settings), view=FakeView(), results=FakeResults()
    )
    assert built.mesh is travel


def test_a_mesh_without_from_text_refuses_plain_words_over_http(settings: Settings) -> None:
    publisher = FakePublisher(settings)
    built = build(
        settings,
        gateway_config(settings, gateway_port=18480),
        mesh=dataclasses.replace(travel, from_text=None),
        publisher=publisher,
        view=FakeView(),
        results=FakeResults(),
    )
    body = send_body()
    body["params"]["message"]["parts"] = [{"kind": "text", "text": "Rome from London"}]
    with TestClient(built.app) as client:
        reply = client.post("/", json=body).json()
    assert reply["error"]["code"] == -32602 and "plain words" in reply["error"]["message"]
    assert publisher.requests == []
