"""The greetings mesh's tests: each handler alone (run_handler), then the flow in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from itinerant import Settings
from itinerant.errors import SchemaViolation
from itinerant.testing import InMemoryMesh, run_handler

from . import greeter, translator
from .flows import GREETING
from .greeter import Greeting
from .mesh import mesh as greetings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, metrics_port_base=0)


# -- step 3: one handler alone ------------------------------------------------------------


async def test_the_greeter_greets_and_remembers(settings: Settings) -> None:
    first = await run_handler(greeter.agent, "greet", {"name": "Ada"}, settings=settings)
    assert first.output_as(Greeting).text == "Hello, Ada!"
    assert first.route == list(GREETING.steps)  # it chose the greeting flow

    again = await run_handler(greeter.agent, "greet", {"name": "Ada"}, settings=settings)
    assert again.output_as(Greeting).text == "Welcome back, Ada!"
    row = again.db.execute("SELECT count FROM visits WHERE name = ?", ("Ada",)).fetchone()
    assert row["count"] == 2  # its own table, committed


async def test_the_greeter_refuses_a_request_without_a_name() -> None:
    with pytest.raises(SchemaViolation, match="name"):
        await run_handler(greeter.agent, "greet", {"language": "fr"})


async def test_the_translator_translates() -> None:
    hello = Greeting(name="Ada", language="fr", text="Hello, Ada!", visits=1)
    result = await run_handler(translator.agent, "translate", hello)
    assert result.output_as(Greeting).text == "Bonjour, Ada!"
    assert result.route is None  # the slip goes on as it is
    assert (result.tokens, result.cost_usd) == (0, 0.0)  # the deterministic provider is free


# -- step 4: the flow end to end, in memory -----------------------------------------------


@pytest.fixture
def in_memory(settings: Settings) -> Iterator[InMemoryMesh]:
    running = InMemoryMesh(settings, greetings)
    yield running
    for store in running.stores.values():
        store.close()


async def test_a_greeting_in_french(in_memory: InMemoryMesh) -> None:
    saga_id = in_memory.publish_request({"name": "Ada", "language": "fr"})
    await in_memory.run()
    result = in_memory.results()[saga_id]
    assert result["status"] == "completed", result
    assert result["output"]["text"] == "Bonjour, Ada!"
    assert [(s["agent"], s["status"]) for s in result["steps"]] == [
        ("greeter", "completed"),
        ("translator", "completed"),
    ]


async def test_english_skips_the_translator(in_memory: InMemoryMesh) -> None:
    saga_id = in_memory.publish_request({"name": "Grace"})
    await in_memory.run()
    result = in_memory.results()[saga_id]
    assert result["output"]["text"] == "Hello, Grace!"
    assert [(s["agent"], s["status"]) for s in result["steps"]] == [
        ("greeter", "completed"),
        ("translator", "skipped"),
    ]


async def test_an_unknown_language_is_refused(in_memory: InMemoryMesh) -> None:
    saga_id = in_memory.publish_request({"name": "Ada", "language": "tlh"})
    await in_memory.run()
    result = in_memory.results()[saga_id]
    assert (result["status"], result["reason"]) == ("rejected", "invalid_request")
    assert "language" in result["error"]  # the ingress says what is wrong
