"""docs/tutorial.md, last step, on a real broker: the greetings mesh started by the real
supervisor (what ``itinerant up`` runs) on the embedded Apache Kafka, then every
``itinerant publish`` command the tutorial shows, run as it is written; each must print the
result the tutorial shows (the fields it shows; ``...`` elides the rest)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Broker, System, start_system

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
CONSOLE = re.compile(r"^```console\n(.*?)^```$", re.DOTALL | re.MULTILINE)
#: A line the tutorial shows of a printed result: ``"key": value`` (a string, number or literal),
#: or ``"key": {`` / ``"key": [`` opening an object or a list.
SHOWN = re.compile(r'^\s*"\w+": (?:"[^"]*"|-?[0-9.]+|true|false|null|\{|\[),?$', re.MULTILINE)


def commands() -> list[tuple[str, str]]:
    """Each ``$ command`` of the tutorial's console blocks, with the output shown below it."""
    found: list[tuple[str, str]] = []
    for block in CONSOLE.findall(TUTORIAL.read_text()):
        for part in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, _, output = part.partition("\n")
            found.append((command.split("  #", 1)[0].strip(), output))
    return found


def exported() -> dict[str, str]:
    exports = [c.removeprefix("export ") for c, _ in commands() if c.startswith("export ")]
    return dict(e.split("=", 1) for e in exports)


def shown_in_order(shown: list[str], printed: list[str]) -> list[str]:
    """The lines of ``shown`` that ``printed`` lacks, in the order shown (empty: all there)."""
    rest = iter(printed)
    return [line for line in shown if not any(line == p for p in rest)]


@pytest.fixture(scope="module")
def app() -> str:
    return exported()["ITINERANT_APP"]


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory, app: str) -> Iterator[System]:
    # The tutorial exports PYTHONPATH so that its module imports; the services inherit it.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), before) if p)
    try:
        running = start_system(broker, tmp_path_factory.mktemp("tutorial"), app=app)
        try:
            yield running
        finally:
            running.supervisor.stop()
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before


def test_the_tutorial_runs_its_own_module(app: str) -> None:
    assert exported()["PYTHONPATH"] == "$PWD"
    assert app == "docs.tutorial.greetings.mesh:mesh"
    assert "$ itinerant up" in TUTORIAL.read_text()


def test_the_tutorial_publishes_and_gets_its_results(system: System) -> None:
    assert sorted(system.supervisor.procs) == ["coordinator", "gateway", "greeter", "translator"]
    published = [(c, out) for c, out in commands() if c.startswith("itinerant publish")]
    assert len(published) >= 2, "the tutorial should publish with --field and from a file"
    for command, shown in published:
        argv = [sys.executable, "-m", "itinerant.cli.main", *shlex.split(command)[1:]]
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env={**os.environ, **system.settings.to_env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{command}: {done.returncode}\n{done.stdout}{done.stderr}"
        saga_id, _, printed = done.stdout.partition("\n")
        result = json.loads(printed)
        assert result["saga_id"] == saga_id.strip()
        fields = [line.strip().rstrip(",") for line in SHOWN.findall(shown) if "..." not in line]
        assert fields, f"the tutorial shows no result for {command}"
        lines = [line.strip().rstrip(",") for line in printed.splitlines()]
        missing = shown_in_order(fields, lines)
        assert not missing, f"{command} printed\n{done.stdout}\nwithout {missing}"
