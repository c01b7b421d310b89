"""``run/up.json`` as `up --detach`, `down` and `scale` read it: a running supervisor's pid, or
none for a missing, unreadable or stale file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from itinerant.cli.up_file import supervisor_pid, up_file


def write(tmp_path: Path, text: str) -> None:
    up_file(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    up_file(tmp_path).write_text(text)


def test_a_live_supervisor_is_found(tmp_path: Path) -> None:
    write(tmp_path, json.dumps({"supervisor_pid": os.getpid()}))

    assert supervisor_pid(tmp_path) == os.getpid()


def test_no_file_an_unreadable_one_or_a_dead_pid_is_none(tmp_path: Path) -> None:
    assert supervisor_pid(tmp_path) is None
    write(tmp_path, "{not json")
    assert supervisor_pid(tmp_path) is None
    write(tmp_path, json.dumps({"services": {}}))
    assert supervisor_pid(tmp_path) is None
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    write(tmp_path, json.dumps({"supervisor_pid": int(gone.stdout)}))
    assert supervisor_pid(tmp_path) is None
