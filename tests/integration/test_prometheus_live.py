"""A real Prometheus (Debian's package) scrapes the running system after demo-like traffic, and
every Grafana panel query is evaluated by it: each must be valid, and each panel over metrics
that ordinary traffic produces must return data."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from itinerant.wire.envelope import Envelope

from .conftest import System, poll_until

pytestmark = pytest.mark.integration

DASHBOARDS = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards"
# Metrics that only move on special events (an LLM call, an MCP tool call, which this mesh makes
# only with its inventory MCP server on, a budget stop, an approval, a replay, an open circuit):
# their panels must evaluate, but ordinary traffic leaves them empty.
EVENT_DRIVEN = (
    "itinerant_llm_",
    "itinerant_tool_call",
    "itinerant_budget_exceeded_total",
    "itinerant_approvals_total",
    "itinerant_dlq_replays_total",
    "itinerant_retries_total",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        loaded: dict[str, Any] = json.loads(response.read())
        return loaded


def panel_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    found.append((path.stem, panel.get("title", "?"), expr))
    return found


def concrete(expr: str) -> str:
    """Grafana's variables, as Grafana would fill them for the last few minutes."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace('=~"$service"', '=~".*"')
        .replace("$service", ".*")
    )


@pytest.fixture(scope="module")
def prometheus(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (make test installs it with apt-get)")
    folder = tmp_path_factory.mktemp("prometheus")
    targets = [
        f"127.0.0.1:{system.settings.metrics_port(name)}"
        for name in system.settings.service_names()
    ]
    config = folder / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "itinerant",
                        "honor_labels": True,
                        "static_configs": [{"targets": targets}],
                    }
                ],
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def all_up() -> bool:
            try:
                result = query(base, 'sum(up{job="itinerant"})')["data"]["result"]
            except OSError:
                return False
            return bool(result) and float(result[0]["value"][1]) == len(targets)

        poll_until(all_up, 60, "Prometheus to scrape every service")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def traffic(system: System) -> None:
    """A trip, a sold-out trip (compensation), a rejected request, a poison message (DLQ)."""
    sagas = {system.publish("trip.json"), system.publish("sold-out.json")}
    rejected = str(uuid.uuid4())
    system.publish_raw(
        system.settings.requests_topic, b"not json", None, [("ce_sagaid", rejected.encode())]
    )
    poison = Envelope(
        id=str(uuid.uuid4()),
        type="itinerant.flights.book.v9",
        source="/clients/test",
        saga_id=str(uuid.uuid4()),
        data=b"{}",
    ).to_message(system.settings.agent_topic("flights"))
    system.publish_raw(poison.topic, poison.value, poison.key, poison.headers)
    system.results(sagas | {rejected})
    system.dead_letters(lambda s: s.headers.get("x-dlq-service") == "flights")


def test_every_panel_query_is_valid_and_ordinary_panels_have_data(
    system: System, traffic: None, prometheus: str
) -> None:
    queries = panel_queries()
    assert len(queries) >= 20, "the dashboards lost their panels"

    def evaluated() -> list[str]:
        empty = []
        for board, title, expr in queries:
            answer = query(prometheus, concrete(expr))
            assert answer["status"] == "success", (board, title, expr, answer)
            if any(name in expr for name in EVENT_DRIVEN):
                continue
            if not answer["data"]["result"]:
                empty.append(f"{board}: {title}: {expr}")
        return empty

    # Rates need two scrapes after the traffic; poll until every ordinary panel has data.
    last: list[str] = []

    def no_empty_panels() -> bool:
        nonlocal last
        last = evaluated()
        return not last

    try:
        poll_until(no_empty_panels, 60, "every ordinary panel to return data", interval_s=2)
    except pytest.fail.Exception:
        pytest.fail("panels without data after traffic:\n" + "\n".join(last))
