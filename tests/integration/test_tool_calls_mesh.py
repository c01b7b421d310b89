"""Flights and hotels search through the inventory MCP server (docs/mcp.md#agents-calling-mcp-tools)
on the embedded broker: `up` starts the server as service inventory-mcp, a trip completes, and
the agents' spans, metrics and forwarded budgets show the tool calls."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from itinerant.observability.tracing import traces_file
from itinerant.security.tokens import operator_headers
from services.settings import travel_settings

from .conftest import Broker, System, free_port, start_system

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    port = free_port()
    # the supervisor (in this process) reads the travel settings to know its side servers
    os.environ["ITINERANT_INVENTORY_MCP_PORT"] = str(port)
    travel_settings.cache_clear()
    try:
        running = start_system(broker, tmp_path_factory.mktemp("tools"), inventory_mcp_port=port)
    finally:
        del os.environ["ITINERANT_INVENTORY_MCP_PORT"]
        travel_settings.cache_clear()
    try:
        yield running
    finally:
        running.supervisor.stop()


def metric(system: System, service: str, name: str, **labels: str) -> float:
    port = system.settings.metrics_port(service)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def saga_budget(system: System, saga_id: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{system.settings.coordinator_http_port}/sagas/{saga_id}"
    request = urllib.request.Request(url, headers=operator_headers(system.settings))
    with urllib.request.urlopen(request, timeout=5) as response:
        budget: dict[str, Any] = json.loads(response.read())["budget"]
    return budget


def tool_spans(system: System, service: str) -> list[dict[str, Any]]:
    path = traces_file(system.settings.data_dir, service)
    if not path.exists():
        return []
    spans = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [s for s in spans if s["name"].startswith("execute_tool ")]


def test_a_trip_searches_through_the_inventory_mcp_server(system: System) -> None:
    assert "inventory-mcp" in system.supervisor.procs
    saga_id = system.publish("trip.json")
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "completed", result
    flights = metric(
        system,
        "flights",
        "itinerant_tool_calls_total",
        server="inventory",
        tool="search_flights",
        outcome="ok",
    )
    assert flights == 2  # outbound and return
    hotels = metric(
        system, "hotels", "itinerant_tool_calls_total", tool="search_hotels", outcome="ok"
    )
    assert hotels == 1
    budget = saga_budget(system, saga_id)  # the spend forwarded in the budget headers
    assert (budget["tool_calls"], budget["max_tool_calls"]) == (3, 50), budget
    deadline = time.monotonic() + 30  # spans are exported in batches, a moment after the step
    while len(spans := tool_spans(system, "flights")) < 2:
        assert time.monotonic() < deadline, f"no execute_tool spans in flights' traces: {spans}"
        time.sleep(0.2)
    assert {s["attributes"]["gen_ai.tool.name"] for s in spans} == {"search_flights"}
    for span in spans:
        assert span["attributes"]["gen_ai.operation.name"] == "execute_tool"
        assert span["attributes"]["gen_ai.tool.call.id"]
