"""``itinerant status`` without a saga id: the local mesh's services, whether they run, and how
large their state stores, logs and traces files have grown (docs/operations.md#growth)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.table import Table

from itinerant.runtime.store import store_bytes
from itinerant.settings import Settings


@dataclass(frozen=True)
class ServiceFiles:
    service: str
    pid: int | None
    running: bool
    store_bytes: int
    log_bytes: int
    traces_bytes: int


def _size(path: Path) -> int:
    """A file and its rotated copies (``<name>.1`` ...)."""
    total = 0
    for part in [path, *path.parent.glob(f"{path.name}.[0-9]*")] if path.parent.is_dir() else []:
        try:
            total += part.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def local_report(settings: Settings) -> list[ServiceFiles]:
    data = settings.data_dir
    run_file = data / "run" / "up.json"
    pids: dict[str, int] = {}
    if run_file.exists():
        try:
            pids = dict(json.loads(run_file.read_text()).get("services", {}))
        except (ValueError, OSError):
            pids = {}
    names = list(dict.fromkeys([*pids, *(p.stem for p in sorted((data / "state").glob("*.db")))]))
    return [
        ServiceFiles(
            service=name,
            pid=pids.get(name),
            running=_running(pids.get(name)),
            store_bytes=store_bytes(data / "state" / f"{name}.db"),
            log_bytes=_size(data / "logs" / f"{name}.log"),
            traces_bytes=_size(data / "traces" / f"{name}.jsonl"),
        )
        for name in names
    ]


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def report_table(rows: list[ServiceFiles], settings: Settings) -> Table:
    table = Table(title=f"services under {settings.data_dir}")
    for column in ("service", "pid", "running", "store", "log", "traces"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.service,
            str(row.pid or "-"),
            "yes" if row.running else "no",
            _mb(row.store_bytes),
            _mb(row.log_bytes),
            _mb(row.traces_bytes),
        )
    return table


def report_data(rows: list[ServiceFiles]) -> list[dict[str, object]]:
    return [asdict(row) for row in rows]
