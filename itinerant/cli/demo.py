"""``itinerant demo``: the whole system on the embedded broker, the samples, live progress."""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from itinerant.errors import ItinerantError
from itinerant.mesh import Mesh, load_mesh
from itinerant.settings import Settings
from itinerant.wire.ids import new_id
from itinerant.wire.request import Request

from .kafka_io import follow, publish_many
from .render import results_table
from .requests import RequestError, load_request
from .supervisor import NO_METRICS, Supervisor
from .terminal import safe


def samples(folder: Path, mesh: Mesh) -> list[tuple[str, Request]]:
    """The requests in ``folder`` that the mesh accepts, each with a fresh id."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            request = load_request(path.read_text(), str(path), mesh.request_model)
        except RequestError:
            continue  # samples of bad input are for other commands
        found.append((path.stem, request.model_copy(update={"request_id": new_id()})))
    return found


def extra_requests(mesh: Mesh, count: int) -> list[tuple[str, Request]]:
    """``count`` varied requests from the mesh's sample generator (none if it has none)."""
    if mesh.samples is None or count <= 0:
        return []
    return [(f"load-{i + 1}", r) for i, r in enumerate(mesh.samples(count))]


def run(settings: Settings, folder: Path, extra: int, timeout_s: float, console: Console) -> int:
    supervisor = Supervisor(settings)
    interrupted = {"flag": False}

    def on_signal(_signum: int, _frame: Any) -> None:
        interrupted["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    broker = "Apache Kafka" if settings.broker == "kafka" else settings.broker
    console.print(
        f"starting the embedded broker ({broker}) and {len(supervisor.services)} services ..."
    )
    try:
        started = time.monotonic()
        supervisor.start()
        supervisor.wait_ready(90)
        console.print(f"[green]ready[/green] in {time.monotonic() - started:.1f}s")
        return _drive(settings, supervisor, folder, extra, timeout_s, console, interrupted)
    except (ItinerantError, TimeoutError) as exc:
        text = exc.describe() if isinstance(exc, ItinerantError) else str(exc)
        console.print(f"[bold red]error:[/bold red] {safe(text, multiline=True)}")
        return 1
    finally:
        console.print("stopping services and broker ...")
        supervisor.stop()
        console.print("[green]stopped[/green]")


def _drive(
    settings: Settings,
    supervisor: Supervisor,
    folder: Path,
    extra: int,
    timeout_s: float,
    console: Console,
    interrupted: dict[str, bool],
) -> int:
    mesh = load_mesh(settings.app)
    requests = samples(folder, mesh) + extra_requests(mesh, extra)
    labels = {r.request_id or "": label for label, r in requests}
    sent = publish_many(settings, [r for _, r in requests])
    console.print(f"published {len(sent)} requests to {settings.requests_topic}")
    results: dict[str, dict[str, Any]] = {}
    arrived: dict[str, float] = {}
    progress: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s

    def table() -> Any:
        rows = [(labels[s], s, results.get(s)) for s in sent]
        shown = rows[: len(rows) - extra + 3] if extra > 3 else rows
        done = len(results)
        t = results_table(shown, mesh.summarize)
        t.caption = (
            f"{done}/{len(sent)} finished; in progress: "
            + ", ".join(
                f"{labels[s]}@{progress[s]}" for s in sent if s not in results and s in progress
            )[:200]
        )
        return t

    with Live(table(), console=console, refresh_per_second=8) as live:
        for seen in follow(settings, [settings.results_topic, settings.events_topic]):
            if seen is not None and seen.key in sent and seen.value is not None:
                if seen.topic == settings.results_topic:
                    results[seen.key] = seen.value
                    arrived.setdefault(seen.key, time.time())
                else:
                    progress[seen.key] = f"{seen.value.get('agent')}"
            live.update(table())
            supervisor.supervise_once()
            if len(results) == len(sent) or time.monotonic() > deadline or interrupted["flag"]:
                break
    _summary(settings, supervisor, sent, results, arrived, console)
    return 0 if len(results) == len(sent) else 1


def _summary(
    settings: Settings,
    supervisor: Supervisor,
    sent: dict[str, float],
    results: dict[str, dict[str, Any]],
    arrived: dict[str, float],
    console: Console,
) -> None:
    by_status: dict[str, int] = {}
    for result in results.values():
        by_status[result["status"]] = by_status.get(result["status"], 0) + 1
    console.print(f"results: {by_status}; missing: {len(sent) - len(results)}")
    latencies = sorted((arrived[s] - sent[s]) * 1000 for s in arrived)
    if latencies:
        span = max(arrived.values()) - min(sent.values())
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        console.print(
            f"measured: {len(latencies)} sagas in {span:.2f}s = {len(latencies) / span:.1f} "
            f"sagas/s; publish->result p50 {statistics.median(latencies):.0f} ms, "
            f"p99 {p99:.0f} ms"
        )
    console.print(f"logs:    {supervisor.log_dir}/<service>.log")
    ports = ", ".join(
        f"{n}:{settings.metrics_port(n)}" for n in supervisor.procs if n not in NO_METRICS
    )
    console.print(f"metrics: http://127.0.0.1:<port>/metrics ({ports})")
    console.print(f"traces:  {settings.data_dir / 'traces'}/<service>.jsonl")
