"""The gateway over HTTP with the mesh faked: card, JSON-RPC errors, token, body limit, cancel."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from itinerant.gateway.app import build
from itinerant.gateway.config import gateway_config
from itinerant.settings import Settings
from services.mesh import mesh as travel
from tests.unit.gateway_fakes import (
    ALICE,
    V1,
    FakeFeed,
    FakePublisher,
    FakeView,
    Harness,
    bearer,
    saga,
    send_body,
    sent_task,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def harness(settings: Settings) -> Iterator[tuple[Harness, TestClient]]:
    built = Harness(settings)
    with TestClient(built.gateway.app, headers=bearer(ALICE)) as client:
        yield built, client


def test_card(harness: tuple[Harness, TestClient]) -> None:
    _h, client = harness
    card = client.get("/.well-known/agent-card.json").json()
    assert card["capabilities"]["streaming"] is True
    assert card["capabilities"]["pushNotifications"] is True
    assert card["capabilities"]["extendedAgentCard"] is True
    assert [(i["protocolVersion"], i["url"]) for i in card["supportedInterfaces"]] == [
        ("1.0", "http://127.0.0.1:18480/"),
        ("0.3", "http://127.0.0.1:18480/"),
    ]
    # the fields an A2A 0.3 client reads, derived by the SDK from the 0.3 interface
    assert card["protocolVersion"] == "0.3" and card["url"] == "http://127.0.0.1:18480/"
    assert card["name"] == "travel"
    assert {s["id"] for s in card["skills"]} == {"plan-trip", "book-trip", "refund"}
    assert card["description"].startswith(travel.description)
    assert travel.request_help in card["description"]
    assert card["defaultInputModes"] == ["application/json", "text/plain"]
    assert card["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_send_publishes_with_trace_context_and_returns_the_saga_task(
    harness: tuple[Harness, TestClient],
) -> None:
    h, client = harness
    reply = client.post("/", json=send_body(), headers={"traceparent": TRACEPARENT}).json()
    task = sent_task(reply)
    assert task["status"]["state"] == "TASK_STATE_SUBMITTED"
    [(sent, customer)] = h.publisher.requests
    assert customer == "alice"  # published on behalf of the caller
    assert sent.saga_id == task["id"] and sent.source == "/itinerant/gateway"
    assert sent.type == "itinerant.request.v1"
    assert (
        sent.traceparent is not None and sent.traceparent.split("-")[1] == TRACEPARENT.split("-")[1]
    )
    assert json.loads(sent.data)["request_id"] == task["id"]
    # not yet in the coordinator's view: still submitted, not "not found"
    got = client.post(
        "/", json={"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task["id"]}}
    ).json()
    assert got["result"]["status"]["state"] == "TASK_STATE_SUBMITTED"


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
        (b'{"jsonrpc":"2.0","id":1,"method":"GetTask"}', -32602, ""),
        (b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":""}}', -32602, ""),
        (b'{"jsonrpc":"1.0","id":1,"method":"GetTask","params":{"id":"x"}}', -32600, ""),
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
        "/", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "nope"}}
    ).json()
    assert got["error"]["code"] == -32001
    push = client.post(
        "/",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "GetTaskPushNotificationConfig",
            "params": {"taskId": "nope", "id": "c1"},
        },
    ).json()
    assert push["error"]["code"] == -32001  # push configs of an unknown task: not found


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
    h.view.sagas["s1"] = saga("s1", "alice", traceparent=TRACEPARENT)
    reply = client.post(
        "/", json={"jsonrpc": "2.0", "id": 1, "method": "CancelTask", "params": {"id": "s1"}}
    ).json()
    assert reply["result"]["id"] == "s1"
    [(cancel, customer)] = h.publisher.cancels
    assert customer == "alice"
    assert cancel.type == "itinerant.saga.discard_requested.v1"
    assert json.loads(cancel.data) == {
        "saga_id": "s1",
        "why": "cancelled by A2A client",
        "entry": None,
        "by": "a2a",
    }
    h.view.sagas["s1"]["state"] = "completed"
    again = client.post(
        "/", json={"jsonrpc": "2.0", "id": 1, "method": "CancelTask", "params": {"id": "s1"}}
    ).json()
    assert again["error"]["code"] == -32002


def test_token(settings: Settings) -> None:
    built = Harness(settings)
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
        ok = client.post("/", json=send_body(), headers=bearer(ALICE))
        assert ok.status_code == 200 and "task" in ok.json()["result"]


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("ITINERANT_GATEWAY_PORT", "9999")
    monkeypatch.setenv("ITINERANT_GATEWAY_TOKEN", ALICE)
    monkeypatch.setenv("ITINERANT_GATEWAY_HOST", "0.0.0.0")
    config = gateway_config(
        Settings(coordinator_http_port=settings.coordinator_http_port, data_dir=settings.data_dir)
    )
    assert (config.port, config.host) == (9999, "0.0.0.0")
    assert config.tokens.principals == ["default"]  # ITINERANT_GATEWAY_TOKEN's principal
    found = config.tokens.identify(ALICE)
    assert found is not None and found.name == "default" and not found.operator
    assert config.public_url == "http://127.0.0.1:9999/"
    assert config.coordinator_url.endswith(f":{settings.coordinator_http_port}")


def test_the_mesh_defaults_to_the_configured_app(settings: Settings) -> None:
    assert settings.app == "services.mesh:mesh"
    built = build(
        settings, publisher=FakePublisher(settings), view=FakeView(), feed=FakeFeed(settings)
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
        feed=FakeFeed(settings),
    )
    body = send_body()
    body["params"]["message"]["parts"] = [{"text": "Rome from London"}]
    with TestClient(built.app, headers=V1) as client:
        reply = client.post("/", json=body).json()
    assert reply["error"]["code"] == -32602 and "plain words" in reply["error"]["message"]
    assert publisher.requests == []
