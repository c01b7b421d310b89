"""``itinerant scale search=3``: change the replicas of a running `itinerant up`
(docs/operations.md#replicas).

The command and the supervisor talk through two files of the run directory: the command writes
``scale.json`` (the counts asked for and a request id), the supervisor applies it in its loop
(``Supervisor.supervise_once``), removes it and answers in ``scale.result.json`` with the same
id: the processes it started and stopped, or why it refused. The command then waits until the
started ones are ready.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itinerant.errors import NonRetryableError

REQUEST_FILE = "scale.json"
RESULT_FILE = "scale.result.json"


class NothingUp(NonRetryableError):
    """No `itinerant up` runs on this data directory to scale."""

    reason = "nothing_up"
    hint = "start the mesh first, e.g. `itinerant up --detach --replicas search=2`"


class ScaleTimedOut(NonRetryableError):
    """The supervisor did not answer, or the new replicas did not become ready, in time."""

    reason = "scale_timed_out"


@dataclass(frozen=True)
class ScaleRequest:
    replicas: dict[str, int]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class ScaleResult:
    id: str
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    error: str | None = None


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # a reader sees the old file or the whole new one


def write_request(run_dir: Path, request: ScaleRequest) -> None:
    _write_atomically(run_dir / REQUEST_FILE, {"id": request.id, "replicas": request.replicas})


def take_request(run_dir: Path) -> ScaleRequest | None:
    """The pending request, removed from the run directory (the supervisor's side)."""
    path = run_dir / REQUEST_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # not ours, or half-written by hand: refused below
        raw = {}
    path.unlink(missing_ok=True)
    replicas = raw.get("replicas") if isinstance(raw, dict) else None
    ident = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(replicas, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in replicas.items()
    ):
        replicas = {}
    return ScaleRequest(replicas, str(ident or "unknown"))


def write_result(run_dir: Path, result: ScaleResult) -> None:
    _write_atomically(
        run_dir / RESULT_FILE,
        {
            "id": result.id,
            "started": result.started,
            "stopped": result.stopped,
            "error": result.error,
        },
    )


def read_result(run_dir: Path, request_id: str) -> ScaleResult | None:
    try:
        raw = json.loads((run_dir / RESULT_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if raw.get("id") != request_id:
        return None
    return ScaleResult(request_id, raw["started"], raw["stopped"], raw.get("error"))


def wait_for_result(run_dir: Path, request: ScaleRequest, timeout_s: float) -> ScaleResult:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = read_result(run_dir, request.id)
        if result is not None:
            return result
        time.sleep(0.1)
    raise ScaleTimedOut(
        f"`itinerant up` did not take the request within {timeout_s:.0f}s",
        hint=f"see {run_dir.parent / 'logs' / 'up.log'} (or the terminal running `itinerant up`)",
    )


def wait_ready(run_dir: Path, names: list[str], since: float, timeout_s: float) -> None:
    """Until every process of ``names`` wrote its ready file after ``since`` (wall time)."""
    deadline = time.monotonic() + timeout_s
    missing = list(names)
    while time.monotonic() < deadline:
        missing = [n for n in names if not _ready_since(run_dir / f"{n}.ready", since)]
        if not missing:
            return
        time.sleep(0.2)
    raise ScaleTimedOut(
        f"started {', '.join(names)}, but {', '.join(missing)} not ready after {timeout_s:.0f}s",
        hint=f"see their logs in {run_dir.parent / 'logs'}",
    )


def _ready_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False
