"""See everything (docs/architecture.md#metrics) on a real broker: one trace per saga across every
service, JSON log
lines with trace and saga ids, ``itinerant top`` and the lag gauge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from itinerant.cli.top import parse_metrics

from .conftest import System, poll_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
AGENTS = ("planner", "flights", "hotels", "validator", "notifier")
SERVICES = ("coordinator", *AGENTS)


def cli(system: System, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**system.settings.to_env(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(
        [sys.executable, "-m", "itinerant.cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def nodes(tree: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in tree:
        yield node
        yield from nodes(node["children"])


def chains(
    tree: list[dict[str, Any]], above: tuple[dict[str, Any], ...] = ()
) -> Iterator[tuple[dict[str, Any], tuple[dict[str, Any], ...]]]:
    """Every node with its ancestors, root first."""
    for node in tree:
        yield node, above
        yield from chains(node["children"], (*above, node))


def is_process(node: dict[str, Any]) -> bool:
    return node["kind"] == "CONSUMER" and str(node["name"]).startswith("process ")


def saga_trace(
    system: System, saga_id: str, complete: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """``itinerant trace <saga> --json`` once ``complete`` holds (spans are written in batches)."""
    last: dict[str, Any] = {}

    def ready() -> dict[str, Any] | None:
        run = cli(system, "trace", saga_id, "--json")
        if run.returncode != 0:
            last["stderr"] = run.stderr
            return None
        doc: dict[str, Any] = json.loads(run.stdout)
        last["doc"] = doc
        return doc if complete(doc) else None

    try:
        return poll_until(ready, 30, what, interval_s=0.5)  # type: ignore[no-any-return]
    except BaseException:
        print(json.dumps(last, indent=1)[-6000:])
        raise


def process_services(doc: dict[str, Any]) -> set[str]:
    return {n["service"] for t in doc["traces"] for n in nodes(t["roots"]) if is_process(n)}


def test_a_trip_is_one_trace_across_every_service(system: System) -> None:
    saga_id = system.publish("trip.json")
    assert system.results({saga_id})[saga_id]["status"] == "completed"
    doc = saga_trace(
        system,
        saga_id,
        lambda d: (
            set(SERVICES) <= process_services(d)
            and sum(
                1 for t in d["traces"] for n in nodes(t["roots"]) if n["service"] == "coordinator"
            )
            >= 6
        ),
        f"process spans of every service in the trace of {saga_id}",
    )
    (trace,) = doc["traces"]  # one trace for the whole saga
    (root,) = trace["roots"]  # and every parent link intact
    assert not root["missing_parent"] and root["parent_id"] is None
    assert root["service"] == "coordinator" and is_process(root)
    assert root["attributes"]["messaging.destination.name"] == system.settings.requests_topic
    for node, above in chains(trace["roots"]):
        if above:
            assert node["parent_id"] == above[-1]["span_id"]
            assert node["start_offset_ms"] >= above[-1]["start_offset_ms"], node["name"]
        if is_process(node):
            assert node["attributes"]["messaging.system"] == "kafka"
            assert node["attributes"]["messaging.message.conversation_id"] == saga_id
            assert above == () or above[-1]["kind"] == "PRODUCER", node["name"]
    # causal order: every hop hangs under the one that sent it
    first: dict[str, float] = {}
    for node in nodes(trace["roots"]):
        if is_process(node):
            first.setdefault(node["service"], node["start_offset_ms"])
            first[node["service"]] = min(first[node["service"]], node["start_offset_ms"])
    assert first["coordinator"] < first["planner"] < min(first["flights"], first["hotels"])
    assert max(first["flights"], first["hotels"]) < first["validator"] < first["notifier"]
    notifier = next(
        (n, a) for n, a in chains(trace["roots"]) if is_process(n) and n["service"] == "notifier"
    )
    hops = [n["service"] for n in notifier[1] if is_process(n)] + ["notifier"]
    assert hops[0] == "coordinator" and hops[-1] == "notifier"
    assert hops.index("planner") < hops.index("validator"), hops
    assert {"flights", "hotels"} <= set(hops) or {"flights", "hotels"} <= set(first), hops
    # the text tree names every service
    text = cli(system, "trace", saga_id)
    assert text.returncode == 0, text.stderr
    for service in SERVICES:
        assert service in text.stdout


def test_a_sold_out_saga_trace_shows_the_compensation(system: System) -> None:
    saga_id = system.publish("sold-out.json")
    assert system.results({saga_id})[saga_id]["status"] == "compensated"

    def compensations(doc: dict[str, Any]) -> list[dict[str, Any]]:
        """Flights spans caused by a progress event the coordinator handled: the undo."""
        events = system.settings.events_topic
        return [
            node
            for t in doc["traces"]
            for node, above in chains(t["roots"])
            if is_process(node)
            and node["service"] == "flights"
            and "compensate" in str(node["attributes"].get("cloudevents.event_type", ""))
            and any(
                a["service"] == "coordinator"
                and a["attributes"].get("messaging.destination.name") == events
                for a in above
            )
        ]

    doc = saga_trace(
        system, saga_id, lambda d: bool(compensations(d)), f"the compensation of {saga_id}"
    )
    assert len(doc["traces"]) == 1
    (undo,) = compensations(doc)
    assert undo["attributes"]["cloudevents.event_type"] == "itinerant.flights.compensate.v1"
    failed = [
        n
        for n in nodes(doc["traces"][0]["roots"])
        if is_process(n) and n["service"] == "hotels" and n["status"] == "ERROR"
    ]
    assert failed and failed[0]["attributes"]["error.type"] == "sold_out"


def test_service_logs_are_json_lines_with_trace_and_saga_ids(system: System) -> None:
    saga_id = system.publish("trip.json")
    assert system.results({saga_id})[saga_id]["status"] == "completed"
    logs = system.settings.data_dir / "logs"

    def booked() -> list[dict[str, Any]]:
        lines = (logs / "flights.log").read_text().splitlines()
        return [json.loads(line) for line in lines if saga_id in line and "booked flights" in line]

    (line,) = poll_until(booked, 10, "the flights log line of the booking")
    assert line["saga_id"] == saga_id
    assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16
    for service in SERVICES:
        text = (logs / f"{service}.log").read_text()
        assert text.strip(), f"{service} logged nothing"
        for number, raw in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError:
                pytest.fail(f"{service}.log line {number} is not JSON: {raw[:300]!r}")
            assert entry["service"] == service, raw
            assert {"time", "level", "logger", "message"} <= set(entry), raw
            if entry.get("trace_id") or entry["logger"].startswith(f"itinerant.{service}"):
                assert entry.get("trace_id") and entry.get("saga_id"), raw


def test_top_once_shows_throughput_of_the_agents(system: System) -> None:
    saga_id = system.publish("trip.json")
    assert system.results({saga_id})[saga_id]["status"] == "completed"
    run = cli(system, "top", "--once", "--json")
    assert run.returncode == 0, run.stderr
    frame = json.loads(run.stdout)
    rows = {row["service"]: row for row in frame["services"]}
    for agent in AGENTS:
        assert rows[agent]["up"], rows[agent]
        assert rows[agent]["processed"] > 0 and rows[agent]["rate"] > 0, rows[agent]
        assert rows[agent]["p99_s"] is not None
    assert frame["sagas_by_state"].get("completed", 0) >= 1 or rows["coordinator"]["up"]
    text = cli(system, "top", "--once")
    assert text.returncode == 0, text.stderr
    for service in SERVICES:
        assert service in text.stdout
    assert "msg/s" in text.stdout and "sagas by state" in text.stdout


def test_consumer_lag_and_broker_storage_gauges(system: System) -> None:
    def samples(service: str, name: str) -> list[Any]:
        port = system.settings.metrics_port(service)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return [s for s in parse_metrics(text) if s.name == name]

    lag = poll_until(
        lambda: samples("flights", "itinerant_consumer_lag_messages"),
        20,
        "the consumer lag gauge of flights",
        interval_s=0.5,
    )
    assert {s.labels["topic"] for s in lag} == {system.settings.agent_topic("flights")}
    assert all(s.value >= 0 for s in lag)
    lags = poll_until(
        lambda: samples("coordinator", "itinerant_consumer_lag_messages"),
        20,
        "the consumer lag gauge of the coordinator",
        interval_s=0.5,
    )
    assert {s.labels["topic"] for s in lags} == {
        system.settings.requests_topic,
        system.settings.events_topic,
    }
    storage = poll_until(
        lambda: samples("coordinator", "itinerant_broker_partition_messages"),
        20,
        "the broker storage gauge",
        interval_s=0.5,
    )
    assert any(s.labels["topic"] == system.settings.requests_topic and s.value > 0 for s in storage)
