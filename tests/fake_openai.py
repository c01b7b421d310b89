"""A real HTTP server speaking the OpenAI Chat Completions API, scripted per test.

Each scenario tags its request text with ``[case:<name>]``; the server finds the tag in the
prompt and answers with the next scripted reply of that case (then its ``then`` reply forever).
Every request it receives is kept, so tests can check what was asked (model, max_tokens, prompt).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.hotels.agent import rooms_for
from services.inventory import catalogue

CASE = re.compile(r"\[case:([a-z0-9_-]+)\]")


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str | None = None
    prompt_tokens: int = 120
    completion_tokens: int = 60
    delay_s: float = 0.0
    finish_reason: str = "stop"
    #: Tool calls the model asks for (``[(name, arguments), ...]``) instead of an answer.
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass
class FakeOpenAI:
    scripts: dict[str, deque[Reply]] = field(default_factory=dict)
    then: dict[str, Reply] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = fake.next_reply(body, self.path)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    payload: dict[str, Any] = {
                        "error": {"message": f"scripted {reply.status}", "type": "server_error"}
                    }
                else:
                    payload = completion(body.get("model", "?"), reply)
                raw = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, case: str, *replies: Reply, then: Reply | None = None) -> None:
        with self.lock:
            self.scripts[case] = deque(replies)
            if then is not None:
                self.then[case] = then

    def next_reply(self, body: dict[str, Any], path: str) -> Reply:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        found = CASE.search(prompt)
        case = found.group(1) if found else "?"
        with self.lock:
            self.requests.append({"case": case, "path": path, **body})
            queue = self.scripts.get(case)
            if queue:
                return queue.popleft()
            return self.then.get(case, Reply(status=500))

    def asked(self, case: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["case"] == case]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def completion(model: str, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    finish_reason = reply.finish_reason
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for i, (name, arguments) in enumerate(reply.tool_calls)
        ]
        finish_reason = "tool_calls"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def draft(
    origin: str,
    destination: str,
    depart: date,
    back: date,
    travellers: int = 1,
    **proposal_overrides: Any,
) -> dict[str, Any]:
    """A PlanDraft as a model would answer, with a proposal true to the inventory (override a
    field to make it a hallucination)."""
    cat = catalogue()
    out = cat.flight_on_route(origin, destination)
    ret = cat.flight_on_route(destination, origin)
    assert out is not None and ret is not None
    hotel = cat.hotels_in(destination)[0]
    nights = (back - depart).days
    flights_usd = round((out.price_usd + ret.price_usd) * travellers, 2)
    hotel_usd = round(hotel.nightly_usd * nights * rooms_for(travellers), 2) if nights else None
    proposal: dict[str, Any] = {
        "outbound_flight": out.flight_no,
        "return_flight": ret.flight_no,
        "hotel_id": hotel.hotel_id if nights else None,
        "flights_usd": flights_usd,
        "hotel_usd": hotel_usd,
        "total_usd": round(flights_usd + (hotel_usd or 0.0), 2),
    }
    proposal.update(proposal_overrides)
    return {
        "flow": "trip",
        "origin": origin,
        "destination": destination,
        "depart_date": depart.isoformat(),
        "return_date": back.isoformat(),
        "travellers": travellers,
        "proposal": proposal,
    }


def good(content: dict[str, Any], **usage: Any) -> Reply:
    return Reply(content=json.dumps(content), **usage)
