"""``itinerant deploy render``: docker-compose.yml and the Prometheus targets from the mesh.

Run on a copy of the repository's deploy files, so nothing checked in is touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from itinerant import Mesh
from itinerant.cli import deploy
from itinerant.cli.main import app
from itinerant.mesh import load_mesh, mesh_and_settings
from itinerant.runtime.agent import Agent
from itinerant.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FILES = [deploy.COMPOSE_FILE, *deploy.LOCAL_CONFIGS, deploy.COMPOSE_CONFIG]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ITINERANT_") or key == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(key)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The deploy files, copied."""
    for path in FILES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    return tmp_path


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["deploy", "render", *args], env={"COLUMNS": "200"})


def load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def travel() -> tuple[Mesh, Settings]:
    return mesh_and_settings(Settings())


def with_agent(name: str) -> tuple[Mesh, Settings]:
    mesh = load_mesh("services.mesh:mesh")
    bigger = dataclasses.replace(mesh, agents=[*mesh.agents, Agent(name, "a new agent")])
    return bigger, bigger.bind(Settings())


def targets(text: str) -> dict[str, int]:
    """service -> port of the itinerant job, static or DNS targets."""
    (job,) = [j for j in load(text)["scrape_configs"] if j["job_name"] == "itinerant"]
    found = {
        s["labels"]["service"]: int(s["targets"][0].rsplit(":", 1)[1])
        for s in job.get("static_configs", [])
    }
    found |= {d["names"][0]: int(d["port"]) for d in job.get("dns_sd_configs", [])}
    return found


def test_check_passes_on_the_checked_in_files(repo: Path) -> None:
    result = run("--check", "--root", str(repo))
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_check_names_stale_files_and_render_repairs_them(repo: Path) -> None:
    local = repo / "deploy" / "prometheus" / "prometheus.local.yml"
    original = local.read_text()
    port = targets(original)["flights"]
    local.write_text(original.replace(f":{port}", f":{port + 1}"))
    compose = repo / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("replicas: 2", "replicas: 3"))

    stale = run("--check", "--root", str(repo))
    assert stale.exit_code == 1
    assert "deploy/prometheus/prometheus.local.yml" in stale.stderr
    assert "docker-compose.yml" in stale.stderr
    assert "deploy/prometheus/prometheus.yml," not in stale.stderr
    assert "itinerant deploy render" in stale.stderr
    assert f'+      - targets: ["127.0.0.1:{port}"]' in stale.stdout  # the diff

    written = run("--root", str(repo))
    assert written.exit_code == 0, written.output
    for path in FILES:
        assert (repo / path).read_text() == (ROOT / path).read_text(), path
    assert run("--check", "--root", str(repo)).exit_code == 0


def test_a_new_agent_is_in_every_file_and_no_other_port_moves(repo: Path) -> None:
    mesh, settings = with_agent("concierge")
    rendered = deploy.render(repo, mesh, settings)
    assert deploy.stale_files(repo, rendered) == FILES

    service = load(rendered[deploy.COMPOSE_FILE])["services"]["concierge"]
    assert service["command"] == ["worker", "concierge"]
    assert "deploy" not in service  # one replica
    port = settings.metrics_port("concierge")
    _, before = travel()
    for path in [*deploy.LOCAL_CONFIGS, deploy.COMPOSE_CONFIG]:
        found = targets(rendered[path])
        assert found["concierge"] == port, path
        # The issue: adding an agent shifted everyone's port. Now the others stay put.
        assert {k: v for k, v in found.items() if k != "concierge"} == targets(
            (ROOT / path).read_text()
        ), path
        assert found["flights"] == before.metrics_port("flights")


def test_render_keeps_what_lies_outside_the_generated_block(repo: Path) -> None:
    path = repo / "deploy" / "prometheus" / "prometheus.yml"
    edited = path.read_text().replace(
        "rule_files:\n", "# a hand-written note\nrule_files:\n  - more-rules.yml\n"
    )
    path.write_text(edited)
    mesh, settings = travel()
    assert deploy.stale_files(repo, deploy.render(repo, mesh, settings)) == []


def test_a_file_without_its_block_is_an_error(repo: Path) -> None:
    path = repo / "deploy" / "prometheus" / "prometheus.compose.yml"
    path.write_text(path.read_text().replace(deploy.END, "# gone"))
    result = run("--check", "--root", str(repo))
    assert result.exit_code == 2
    assert "prometheus.compose.yml has no generated block" in result.stderr


def test_replicas_are_a_parameter_within_the_partitions(repo: Path) -> None:
    mesh, settings = travel()
    compose = load(deploy.render_compose(mesh, settings, {"hotels": 3}))["services"]
    assert compose["hotels"]["deploy"]["replicas"] == 3
    assert compose["flights"]["deploy"]["replicas"] == 2  # the default stays
    one = load(deploy.render_compose(mesh, settings, {"flights": 1}))["services"]
    assert "deploy" not in one["flights"]

    assert run("--replicas", "flights=9", "--root", str(repo)).exit_code == 2
    assert run("--replicas", "nobody=2", "--root", str(repo)).exit_code == 2
    assert run("--replicas", "coordinator=2", "--root", str(repo)).exit_code == 2
    assert run("--replicas", "flights", "--root", str(repo)).exit_code == 2
    bigger = run("--replicas", "hotels=2", "--check", "--root", str(repo))
    assert bigger.exit_code == 1 and "docker-compose.yml" in bigger.stderr


def test_agents_other_than_the_meshs_default_are_set_in_compose(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ITINERANT_AGENTS (here: the optional probe), containers must run the same agents,
    or their ports and topics would not be the rendered ones."""
    monkeypatch.setenv("ITINERANT_AGENTS", '["planner", "flights", "probe"]')
    mesh, settings = travel()
    text = deploy.render_compose(mesh, settings)
    env = load(text)["x-itinerant-env"]
    assert env["ITINERANT_AGENTS"] == '["planner", "flights", "probe"]'
    assert env["ITINERANT_APP"] == "services.mesh:mesh"
    assert set(load(text)["services"]) >= {"coordinator", "planner", "flights", "probe"}
    assert "hotels" not in load(text)["services"]


@pytest.mark.parametrize("name", ["kafka", "Bad_Name", "no"])
def test_agent_names_that_cannot_be_compose_services(name: str) -> None:
    mesh, settings = with_agent(name)
    if name == "no":  # a YAML word: rendered quoted, reads back as the string
        services = load(deploy.render_compose(mesh, settings))["services"]
        assert services["no"]["command"] == ["worker", "no"]
        return
    with pytest.raises(deploy.DeployError):
        deploy.render_compose(mesh, settings)
