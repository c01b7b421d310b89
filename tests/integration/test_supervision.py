"""`itinerant up` as a real process on the broker (docs/operations.md#supervision): one per data
directory, its services die with it when it is SIGKILLed, and it gives up loudly on a service
that keeps failing right after each start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from itinerant.settings import Settings

from .conftest import Broker, free_port, free_port_block, poll_until

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours (already dead, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@dataclass
class Up:
    process: subprocess.Popen[str]
    settings: Settings
    env: dict[str, str]

    @property
    def run_file(self) -> Path:
        return self.settings.data_dir / "run" / "up.json"

    def services(self) -> dict[str, int]:
        pids: dict[str, int] = json.loads(self.run_file.read_text())["services"]
        return pids

    def wait_ready(self) -> dict[str, int]:
        def ready() -> bool:
            assert self.process.poll() is None, self.process.communicate()[0]
            if not self.run_file.exists():
                return False
            names = self.services()
            return all((self.run_file.parent / f"{n}.ready").exists() for n in names)

        poll_until(ready, 120, "itinerant up ready")
        return self.services()


def start_up(broker: Broker, data_dir: Path, **overrides: object) -> Up:
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        broker="external",
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=data_dir,
        partitions=1,
        metrics_port_base=free_port_block(100),
        coordinator_http_port=free_port(),
        gateway_port=0,
        **overrides,  # type: ignore[arg-type]
    )
    env = {
        **settings.to_env(),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "COLUMNS": "250",  # no wrapping of the messages checked below
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "itinerant.cli.main", "up", "--ready-timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    return Up(process, settings, env)


@pytest.fixture
def up(broker: Broker, tmp_path: Path) -> Iterator[Up]:
    running = start_up(broker, tmp_path / "data")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
            running.process.wait(timeout=60)


def test_a_second_up_on_the_same_data_dir_is_refused_and_a_killed_up_leaves_no_orphans(
    up: Up,
) -> None:
    pids = up.wait_ready()
    assert pids and all(alive(pid) for pid in pids.values())
    second = subprocess.run(
        [sys.executable, "-m", "itinerant.cli.main", "up", "--ready-timeout", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        env=up.env,
    )
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"pid {up.process.pid}" in second.stdout + second.stderr
    assert "itinerant down" in second.stdout + second.stderr  # what to do
    assert up.services() == pids  # the first one's run file and services untouched
    assert all(alive(pid) for pid in pids.values())

    up.process.send_signal(signal.SIGKILL)  # no chance to stop anything itself
    up.process.wait(timeout=10)
    poll_until(
        lambda: not [n for n, pid in pids.items() if alive(pid)],
        60,
        "every service of the killed `itinerant up` gone",
    )


def test_a_service_that_keeps_failing_at_start_makes_up_give_up_loudly(
    broker: Broker, tmp_path: Path
) -> None:
    running = start_up(
        broker, tmp_path / "data", restart_give_up_after=2, restart_healthy_after_s=600
    )
    try:
        pids = running.wait_ready()
        victim = "validator"
        first = pids[victim]
        os.kill(first, signal.SIGKILL)  # from outside: a crash, as far as `up` can tell
        poll_until(
            lambda: running.services()[victim] != first,
            60,
            "the validator restarted once",
        )
        os.kill(running.services()[victim], signal.SIGKILL)
        output, _ = running.process.communicate(timeout=120)
    finally:
        if running.process.poll() is None:
            running.process.kill()
    assert running.process.returncode == 1, output
    assert "validator kept failing right after starting" in output
    assert "validator.log" in output
    assert not [n for n, pid in pids.items() if alive(pid)]  # everything else stopped too
