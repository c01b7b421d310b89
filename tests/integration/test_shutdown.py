"""Graceful shutdown: SIGTERM a service while its messages are in flight (a handler sleeping in
its retry backoff), restart it, and nothing is lost and nothing done twice; and the
`itinerant up --detach` / `itinerant down` round trip leaves no process behind.

Faust acknowledges the event an agent is handling when the agent's task is cancelled (the
``finally`` of the stream iterator), and commits acknowledged offsets on shutdown: a message
whose handler was interrupted would be committed without being handled. These tests send SIGTERM
exactly then."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from itinerant.brokers.connection import port_open
from itinerant.cli.kafka_io import publish_many
from itinerant.mesh import load_mesh
from itinerant.settings import Settings

from .conftest import Broker, System, free_port, free_port_block, poll_until, start_system
from .failure_helpers import (
    RawReader,
    booking_problems,
    bookings_by_saga,
    itinerant,
    saga_states,
    trip_requests,
)

pytestmark = pytest.mark.integration

SAGAS = 30
RETRY = re.compile(r"retry (\d+) of (\S+) in ([0-9.]+)s")


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # Flaky inventory (30 % of calls fail, up to 8 tries) keeps flights' handlers busy in their
    # backoff, so a SIGTERM finds work in flight (and none of it parks). Searches run in turn,
    # so a slow restart is never a parallel-group timeout, and a lost message shows as a step
    # timeout.
    running = start_system(
        broker,
        tmp_path_factory.mktemp("shutdown"),
        fault_inventory_rate=0.3,
        max_attempts=8,
        circuit_threshold=1000,  # faults are retried, never a reason to open the circuit
        parallel_search=False,
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def log_lines(path: Path, start: int) -> tuple[list[str], int]:
    with path.open("rb") as log:
        log.seek(start)
        data = log.read()
    end = start + len(data)
    if not data.endswith(b"\n"):  # keep a half-written line for the next read
        cut = data.rfind(b"\n") + 1
        data, end = data[:cut], start + cut
    return data.decode("utf-8", errors="replace").splitlines(), end


def wait_for_retry(system: System, service: str, min_delay_s: float, timeout_s: float) -> str:
    """Id of a message whose handler just went to sleep before its next try (in flight)."""
    path = system.supervisor.procs[service].log_path
    offset = path.stat().st_size
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines, offset = log_lines(path, offset)
        for line in lines:
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            match = RETRY.search(message)
            if match and float(match[3]) >= min_delay_s:
                return match[2]
        time.sleep(0.01)
    pytest.fail(f"no retry of {service} within {timeout_s:.0f}s")


GRACEFUL_S = 15.0  # Faust stops in a second or two; `itinerant down` kills after 10 s


def sigterm(system: System, service: str) -> tuple[int | None, float]:
    """SIGTERM the service (its process group, as `itinerant down` does) and wait for it to
    exit; if it has not after GRACEFUL_S, SIGKILL it (returns None as its exit code)."""
    process = system.supervisor.procs[service].process
    assert process is not None and process.poll() is None
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        code: int | None = process.wait(timeout=GRACEFUL_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        code = None
    return code, time.monotonic() - started


def shutdown_report(system: System, service: str) -> str:
    """What the service logged while it did not stop (Faust's wait for unacked messages)."""
    lines = system.supervisor.procs[service].log_path.read_text(errors="replace").splitlines()
    waits = [ln for ln in lines if "wait_empty" in ln]
    return f"{len(waits)} 'wait_empty' warning(s), last: {waits[-1][:400] if waits else '-'}"


@pytest.mark.parametrize("service", ["flights", "coordinator"])
def test_sigterm_with_work_in_flight_loses_nothing(system: System, service: str) -> None:
    settings = system.settings
    batch = trip_requests(SAGAS, tag=f"Term {service}")
    saga_ids = {str(r.request_id) for r in batch}
    sold_out = {str(r.request_id) for r in batch if r.destination == "KEF"}
    restarts = system.supervisor.procs[service].restarts
    publish_many(settings, batch)

    if service == "flights":
        in_flight = wait_for_retry(system, "flights", 0.3, 60)
    else:
        in_flight = None
        poll_until(
            lambda: len(bookings_by_saga(settings).keys() & saga_ids) >= 3,
            60,
            "the first bookings of the batch",
            interval_s=0.02,
        )
        # A two-second pause (as a GC pause or a slow disk would) lets a backlog of events
        # build up, which the consumer fetches at once when it resumes: SIGTERM then.
        process = system.supervisor.procs[service].process
        assert process is not None
        os.killpg(process.pid, signal.SIGSTOP)
        time.sleep(2.0)  # the length of the pause, not a wait for a condition
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.3)  # let it fetch the backlog
    code, took = sigterm(system, service)
    stuck = None if code is not None else shutdown_report(system, service)

    # Restarted by the supervisor; every saga ends as it would have without the restart.
    def settled() -> dict[str, str] | None:
        system.supervisor.supervise_once()
        states = saga_states(settings)
        if states is None:
            return None
        mine = {s: states[s] for s in saga_ids if s in states}
        done = len(mine) == len(saga_ids) and all(
            v in ("completed", "compensated", "failed") for v in mine.values()
        )
        return mine if done else None

    states = poll_until(settled, 150, f"all {SAGAS} sagas to end after the restart", 0.5)
    assert system.supervisor.procs[service].restarts == restarts + 1
    outcomes = Counter(
        (state, "sold out" if s in sold_out else "trip") for s, state in states.items()
    )
    wrong = {
        s: state
        for s, state in states.items()
        if state != ("compensated" if s in sold_out else "completed")
    }
    assert not wrong, (
        f"exit code {code}; message in flight at SIGTERM: {in_flight}; outcomes {dict(outcomes)}; "
        f"e.g. {[(s, reasons(settings, s)) for s in list(wrong)[:3]]}"
    )
    problems = booking_problems(states, bookings_by_saga(settings), sold_out)
    assert not problems, problems
    with RawReader(settings, [settings.results_topic]) as reader:
        records = reader.until(lambda rs: saga_ids <= {r.key_text for r in rs}, 60, "every result")
    statuses: dict[str, set[str]] = {}
    for record in records:
        if record.key_text in saga_ids:
            statuses.setdefault(str(record.key_text), set()).add(record.json()["status"])
    assert all(v == {states[s]} for s, v in statuses.items()), statuses
    assert code is not None, (
        f"{service} did not stop within {took:.0f}s of SIGTERM (killed; nothing was lost "
        f"thanks to the inbox, but the shutdown is not graceful): {stuck}"
    )
    assert code == 0, f"{service} exited with {code} on SIGTERM"


def reasons(settings: Settings, saga_id: str) -> str:
    from .failure_helpers import saga_view

    view = saga_view(settings, saga_id) or {}
    return f"{view.get('reason')}: {view.get('error')}"


# --- itinerant up --detach / down ---------------------------------------------------------------


def live_in_groups(groups: set[int]) -> list[tuple[int, int, str]]:
    """(pid, process group, state) of every live (not zombie) process in ``groups``."""
    live = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in groups and state != "Z":
            live.append((int(entry.name), pgrp, state))
    return live


def test_up_detach_then_down_leaves_no_process(tmp_path: Path) -> None:
    broker_port = free_port()
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{broker_port}",
        broker="kafka",
        topic_prefix="updown.",
        data_dir=tmp_path / "data",
        partitions=1,
        metrics_port_base=free_port_block(100),
        coordinator_http_port=free_port(),
        gateway_port=free_port(),
        console_port=free_port(),
    )
    run_file = settings.data_dir / "run" / "up.json"
    groups: set[int] = set()
    try:
        up = itinerant(settings, "up", "--detach", timeout_s=180)
        assert up.returncode == 0, up.stdout + up.stderr
        info = json.loads(run_file.read_text())
        groups = {int(info["supervisor_pid"]), int(info["broker_pid"])} | {
            int(pid) for pid in info["services"].values()
        }
        bound = load_mesh(settings.app).bind(settings)  # the mesh's agents
        assert set(info["services"]) == {*bound.service_names(), "gateway", "console"}
        assert len(live_in_groups(groups)) >= len(groups)

        trip = itinerant(
            settings, "publish", "examples/requests/trip.json", "--wait", timeout_s=120
        )
        assert trip.returncode == 0, trip.stdout + trip.stderr
        assert '"completed"' in trip.stdout

        down = itinerant(settings, "down", timeout_s=90)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "down" in down.stdout
        left = poll_until(lambda: not live_in_groups(groups), 15, "every process gone")
        assert left
        assert not run_file.exists()
        assert not port_open("127.0.0.1", broker_port)
        again = itinerant(settings, "down")
        assert again.returncode == 0 and "nothing is running" in again.stdout
    finally:
        for pid, _group, _state in live_in_groups(groups):  # only what this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
