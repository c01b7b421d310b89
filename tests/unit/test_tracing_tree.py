"""``itinerant trace``: finding a saga's trace in the traces files and building its span tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from itinerant.cli.trace import Node, build_tree, find_traces, trace_command, walk
from itinerant.observability.tracing import SAGA_ATTRIBUTE

TRACE = "a" * 32
OTHER = "b" * 32


def span(
    span_id: str,
    parent_id: str | None,
    start_ms: float,
    end_ms: float,
    *,
    name: str = "process t",
    service: str = "itinerant-x",
    trace_id: str = TRACE,
    saga: str | None = "saga-1",
    **extra: Any,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {SAGA_ATTRIBUTE: saga} if saga else {}
    attributes.update(extra.pop("attributes", {}))
    return {
        "name": name,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": parent_id,
        "start_ns": int(start_ms * 1e6),
        "end_ns": int(end_ms * 1e6),
        "kind": extra.pop("kind", "CONSUMER"),
        "status": extra.pop("status", "UNSET"),
        "service": service,
        "attributes": attributes,
        "events": [],
        "links": [],
        **extra,
    }


def write(path: Path, spans: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        for item in spans:
            out.write(json.dumps(item) + "\n")


def names(nodes: list[Node]) -> list[str]:
    return [str(n.span["span_id"]) for n in nodes]


def test_children_sorted_by_start_and_nested_by_parent() -> None:
    roots = build_tree(
        [
            span("c2", "r", 30, 40),
            span("r", None, 0, 100),
            span("c1", "r", 10, 20),
            span("g1", "c1", 12, 15),
            span("c3", "r", 20, 50),
        ]
    )
    assert names(roots) == ["r"]
    assert names(roots[0].children) == ["c1", "c3", "c2"]
    assert names(roots[0].children[0].children) == ["g1"]
    assert not roots[0].missing_parent
    assert [n.span["span_id"] for n in walk(roots)] == ["r", "c1", "g1", "c3", "c2"]


def test_span_whose_parent_is_missing_becomes_a_marked_root() -> None:
    roots = build_tree(
        [span("r", None, 0, 10), span("o", "gone", 5, 6), span("self", "self", 7, 8)]
    )
    assert names(roots) == ["r", "o", "self"]
    assert [n.missing_parent for n in roots] == [False, True, True]


def test_find_traces_across_service_files(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    write(
        traces / "coordinator.jsonl",
        [
            span("r", None, 0, 5, service="itinerant-coordinator"),
            span("z", None, 0, 5, trace_id=OTHER, saga="saga-2"),
        ],
    )
    write(
        traces / "planner.jsonl",
        [
            span("s", "r", 1, 1, name="send p", saga=None, kind="PRODUCER"),
            span("p", "s", 2, 9, service="itinerant-planner"),
        ],
    )
    (traces / "notes.txt").write_text("not a traces file " + "saga-1")
    with (traces / "planner.jsonl").open("a") as out:
        out.write('{"truncated": "saga-1", "trace_id": "' + TRACE)  # a line being written
    (found,) = find_traces(traces, "saga-1")
    assert found.trace_id == TRACE
    assert found.spans == 3
    (root,) = found.roots
    assert root.span["span_id"] == "r"
    assert [n.span["span_id"] for n in walk(found.roots)] == ["r", "s", "p"]
    assert find_traces(traces, "saga-unknown") == []
    assert find_traces(tmp_path / "nowhere", "saga-1") == []


def _app() -> Any:
    import typer

    app = typer.Typer()
    app.command()(trace_command)
    return app


def test_trace_command_json_and_tree(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    write(
        traces / "a.jsonl",
        [
            span("r", None, 1000, 1100, service="itinerant-coordinator"),
            span(
                "f",
                "r",
                1010,
                1050,
                service="itinerant-flights",
                name="process itinerant.flights",
                status="ERROR",
                attributes={"error.type": "sold_out", "itinerant.replay_count": 1},
            ),
        ],
    )
    runner = CliRunner()
    result = runner.invoke(_app(), ["saga-1", "--json", "--dir", str(traces)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    (tree,) = doc["traces"]
    assert tree["trace_id"] == TRACE and tree["spans"] == 2
    (root,) = tree["roots"]
    assert root["service"] == "coordinator" and root["start_offset_ms"] == 0
    (child,) = root["children"]
    assert child["service"] == "flights"
    assert child["start_offset_ms"] == 10.0 and child["duration_ms"] == 40.0
    text = runner.invoke(_app(), ["saga-1", "--dir", str(traces)])
    assert text.exit_code == 0, text.output
    assert "flights" in text.output and "process itinerant.flights" in text.output
    assert "sold_out" in text.output and "replay #1" in text.output


def test_trace_command_says_where_it_looked(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    write(traces / "planner.jsonl", [span("r", None, 0, 1)])
    result = CliRunner().invoke(_app(), ["nope", "--dir", str(traces)])
    assert result.exit_code == 3
    said = " ".join(result.output.split())
    assert "no trace of saga nope" in said
    assert "planner.jsonl" in said
    empty = CliRunner().invoke(_app(), ["nope", "--dir", str(tmp_path / "none")])
    assert empty.exit_code == 3 and "holds no traces files" in " ".join(empty.output.split())
