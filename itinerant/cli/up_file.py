"""``run/up.json``: what a running `itinerant up` writes about itself (its pid, its services'),
read by the commands that talk to it (`up --detach`, `down`, `scale`)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def up_file(data_dir: Path) -> Path:
    return data_dir / "run" / "up.json"


def supervisor_pid(data_dir: Path) -> int | None:
    """The pid of the `itinerant up` running on ``data_dir``; ``None`` when there is no run
    file, it cannot be read, or its process is gone."""
    try:
        pid = int(json.loads(up_file(data_dir).read_text())["supervisor_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return True
