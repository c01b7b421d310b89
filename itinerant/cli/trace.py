"""``itinerant trace <saga-id>``: a saga's trace as a tree, read from the services' traces files.

Every service writes its spans to ``$ITINERANT_DATA_DIR/traces/<service>.jsonl``. The saga's
trace is found through the ``messaging.message.conversation_id`` attribute (= saga id) of its
spans; then every span of that trace, from every file, is put in a tree by parent span id,
children in start order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.tree import Tree

from itinerant.observability.tracing import EVENT_TYPE_ATTRIBUTE, REPLAY_ATTRIBUTE, SAGA_ATTRIBUTE
from itinerant.settings import Settings

from .terminal import safe

SERVICE_PREFIX = "itinerant-"


@dataclass
class Node:
    span: dict[str, Any]
    children: list[Node] = field(default_factory=list)
    #: The span names a parent that is in no traces file (a remote caller, or spans lost).
    missing_parent: bool = False

    @property
    def start_ns(self) -> int:
        return int(self.span.get("start_ns") or 0)

    @property
    def end_ns(self) -> int:
        return int(self.span.get("end_ns") or self.start_ns)


@dataclass
class Trace:
    trace_id: str
    roots: list[Node]
    spans: int

    @property
    def start_ns(self) -> int:
        return min((r.start_ns for r in self.roots), default=0)

    @property
    def end_ns(self) -> int:
        return max((n.end_ns for n in walk(self.roots)), default=0)


def trace_files(traces_dir: Path) -> list[Path]:
    """Every service's traces file and its rotated copies (``<service>.jsonl.1`` ...)."""
    if not traces_dir.is_dir():
        return []
    return sorted([*traces_dir.glob("*.jsonl"), *traces_dir.glob("*.jsonl.[0-9]*")])


def _lines(paths: Iterable[Path], needles: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Spans of lines containing any of ``needles`` (a cheap filter before parsing)."""
    wanted = [n for n in needles if n]
    for path in paths:
        try:
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if not any(n in line for n in wanted):
                        continue
                    try:
                        span = json.loads(line)
                    except json.JSONDecodeError:  # a line still being written
                        continue
                    if isinstance(span, dict):
                        yield span
        except OSError:
            continue


def trace_ids_of_saga(paths: list[Path], saga_id: str) -> list[str]:
    """Trace ids of spans of ``saga_id``, most spans first."""
    counts: dict[str, int] = {}
    for span in _lines(paths, [saga_id]):
        attributes = span.get("attributes") or {}
        trace_id = span.get("trace_id")
        if attributes.get(SAGA_ATTRIBUTE) == saga_id and isinstance(trace_id, str):
            counts[trace_id] = counts.get(trace_id, 0) + 1
    return sorted(counts, key=lambda t: -counts[t])


def spans_of_traces(paths: list[Path], trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {t: [] for t in trace_ids}
    seen: set[tuple[str, str]] = set()
    for span in _lines(paths, trace_ids):
        trace_id, span_id = span.get("trace_id"), span.get("span_id")
        if trace_id in found and isinstance(span_id, str) and (trace_id, span_id) not in seen:
            seen.add((trace_id, span_id))  # files may be read while spans are appended
            found[trace_id].append(span)
    return found


def build_tree(spans: list[dict[str, Any]]) -> list[Node]:
    """Roots of the span forest: spans without a parent, or whose parent is not in ``spans``
    (marked ``missing_parent``); every list sorted by start time."""
    nodes = {span["span_id"]: Node(span) for span in spans if span.get("span_id")}
    roots: list[Node] = []
    for node in nodes.values():
        parent_id = node.span.get("parent_id")
        parent = nodes.get(parent_id) if parent_id else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            node.missing_parent = bool(parent_id)
            roots.append(node)
    for node in nodes.values():
        node.children.sort(key=_order)
    roots.sort(key=_order)
    return roots


def _order(node: Node) -> tuple[int, str]:
    return node.start_ns, str(node.span.get("name", ""))


def walk(nodes: Iterable[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        yield from walk(node.children)


def find_traces(traces_dir: Path, saga_id: str) -> list[Trace]:
    paths = trace_files(traces_dir)
    trace_ids = trace_ids_of_saga(paths, saga_id)
    if not trace_ids:
        return []
    by_trace = spans_of_traces(paths, trace_ids)
    return [Trace(t, build_tree(by_trace[t]), len(by_trace[t])) for t in trace_ids]


def service_of(span: dict[str, Any]) -> str:
    name = str(span.get("service") or "?")
    return name[len(SERVICE_PREFIX) :] if name.startswith(SERVICE_PREFIX) else name


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def node_dict(node: Node, origin_ns: int) -> dict[str, Any]:
    span = node.span
    return {
        "service": service_of(span),
        "name": span.get("name"),
        "kind": span.get("kind"),
        "span_id": span.get("span_id"),
        "parent_id": span.get("parent_id"),
        "missing_parent": node.missing_parent,
        "start_offset_ms": _ms(node.start_ns - origin_ns),
        "duration_ms": _ms(node.end_ns - node.start_ns),
        "status": span.get("status"),
        "status_message": span.get("status_message"),
        "attributes": span.get("attributes") or {},
        "events": span.get("events") or [],
        "links": span.get("links") or [],
        "children": [node_dict(child, origin_ns) for child in node.children],
    }


def trace_dict(found: Trace) -> dict[str, Any]:
    origin = found.start_ns
    return {
        "trace_id": found.trace_id,
        "spans": found.spans,
        "duration_ms": _ms(found.end_ns - origin),
        "roots": [node_dict(root, origin) for root in found.roots],
    }


def _label(node: Node, origin_ns: int) -> str:
    span = node.span
    attributes = span.get("attributes") or {}
    offset = _ms(node.start_ns - origin_ns)
    duration = _ms(node.end_ns - node.start_ns)
    is_send = span.get("kind") == "PRODUCER"
    name = safe(str(span.get("name", "?")))
    text = (
        f"[cyan]{safe(service_of(span)):<11}[/cyan] "
        + (f"[dim]{name}[/dim]" if is_send else f"[bold]{name}[/bold]")
        + f"  [dim]+{offset:,.1f} ms[/dim]  {duration:,.2f} ms"
    )
    event_type = attributes.get(EVENT_TYPE_ATTRIBUTE)
    if event_type:
        text += f"  [dim]{safe(str(event_type))}[/dim]"
    if span.get("status") == "ERROR":
        reason = attributes.get("error.type") or span.get("status_message") or "error"
        text += f"  [red]ERROR {safe(str(reason))}[/red]"
    replays = attributes.get(REPLAY_ATTRIBUTE)
    if replays:
        text += f"  [magenta]replay #{replays}[/magenta]"
    retries = [e for e in span.get("events") or [] if e.get("name") == "retry"]
    if retries:
        text += f"  [yellow]{len(retries)} retr{'y' if len(retries) == 1 else 'ies'}[/yellow]"
    if attributes.get("itinerant.duplicate"):
        text += "  [yellow]duplicate[/yellow]"
    if node.missing_parent:
        text += "  [dim](parent not recorded)[/dim]"
    return text


def render(found: Trace, saga_id: str) -> Tree:
    origin = found.start_ns
    tree = Tree(
        f"[bold]saga {safe(saga_id)}[/bold]  trace {safe(found.trace_id)}  "
        f"{found.spans} spans  {_ms(found.end_ns - origin):,.1f} ms"
    )

    def add(branch: Tree, node: Node) -> None:
        child = branch.add(_label(node, origin))
        for grandchild in node.children:
            add(child, grandchild)

    for root in found.roots:
        add(tree, root)
    return tree


def trace_command(
    saga_id: Annotated[str, typer.Argument(help="the saga id (the request id)")],
    as_json: Annotated[bool, typer.Option("--json", help="the tree as JSON, for scripts")] = False,
    traces_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="folder of traces files (default: $ITINERANT_DATA_DIR/traces)"),
    ] = None,
) -> None:
    """A saga's trace: every hop, retry, compensation and replay, as a tree of spans."""
    console = Console()
    folder = traces_dir if traces_dir is not None else Settings().data_dir / "traces"
    found = find_traces(folder, saga_id)
    if not found:
        files = trace_files(folder)
        where = (
            f"{len(files)} traces file(s) in {folder} ({', '.join(p.name for p in files)})"
            if files
            else f"{folder}, which holds no traces files"
        )
        Console(stderr=True).print(
            f"[bold red]error:[/bold red] no trace of saga {safe(saga_id)} in {safe(where)}. "
            "Check the id (`itinerant status <id>`); spans are written about a second after "
            "they end; with OTEL_EXPORTER_OTLP_ENDPOINT set they also go to your collector.",
            highlight=False,
        )
        raise typer.Exit(3)
    if as_json:
        print(
            json.dumps({"saga_id": saga_id, "traces": [trace_dict(t) for t in found]}, default=str)
        )
        return
    if len(found) > 1:
        console.print(
            f"[yellow]saga {safe(saga_id)} has spans in {len(found)} traces[/yellow] "
            "(a client sent another traceparent, or a message lost its header)"
        )
    for one in found:
        console.print(render(one, saga_id))
