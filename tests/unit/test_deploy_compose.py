"""docker-compose.yml and the Prometheus/Grafana wiring agree with the code (no Docker needed).

docker-compose.yml and the Prometheus scrape targets are generated from the mesh by
``itinerant deploy render`` (itinerant/cli/deploy.py); the checked-in files must be what it
renders now. The compose file is validated against the Compose Specification JSON schema as
vendored by ``check-jsonschema``; everything else is checked against the repository itself: the
paths it mounts and builds from, the CLI commands it runs, the settings it sets, and the ports
that Prometheus scrapes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from itinerant.mesh import mesh_and_settings
from itinerant.settings import Settings
from services.settings import TravelSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
IMAGE = "itinerant:local"
SETTINGS_ENV = {"KAFKA_BOOTSTRAP_SERVERS"}  # env names that are settings without the prefix


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path)


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    result = compose()["services"]
    assert isinstance(result, dict)
    return result


def itinerant_services() -> dict[str, dict[str, Any]]:
    """Services that run the project's image (built from deploy/docker/Dockerfile)."""
    return {name: svc for name, svc in services().items() if svc.get("image") == IMAGE}


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment, map or list syntax; ``None`` = passed through from the host."""
    env = service.get("environment", {})
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


_DEFAULT = re.compile(r"^\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}$")


def resolve(value: str | None) -> str | None:
    """The value compose uses when the host sets nothing: ``${X:-d}`` -> d, ``${X}`` -> unset."""
    if value is None:
        return None
    match = _DEFAULT.match(value)
    if match is None:
        assert "$" not in value, f"unsupported interpolation {value!r}"
        return value
    return match["default"]


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def settings_from(env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a container with this environment would read them: bound to the mesh, as
    every command binds them (its agents are the services)."""
    for key in list(os.environ):
        if key.startswith("ITINERANT_") or key in SETTINGS_ENV:
            monkeypatch.delenv(key)
    for key, value in env.items():
        resolved = resolve(value)
        if resolved is not None:
            monkeypatch.setenv(key, resolved)
    return mesh_and_settings(Settings())[1]


def mesh_settings() -> Settings:
    """The settings of the application every command runs, bound to its mesh."""
    return mesh_and_settings(Settings())[1]


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host source, container target) of each bind mount, short or long syntax."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/", "~")):
                yield source, target
        elif volume.get("type") == "bind":
            yield volume["source"], volume["target"]


# --- the Compose Specification ------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema that ``check-jsonschema`` vendors.

    Located without importing check_jsonschema: only its data file is used, so its CLI's
    requirements (a newer click than faust-streaming allows) do not matter here.
    """
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations, "pip install check-jsonschema"
    package = Path(next(iter(spec.submodule_search_locations)))
    path = package / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_spec_schema() -> None:
    assert schema_errors(compose()) == []


def test_the_compose_schema_catches_mistakes() -> None:
    """The validation above is not vacuous: the same schema rejects broken variants."""
    typo = compose()
    typo["services"]["flights"]["deploy"] = {"replica": 2}
    assert schema_errors(typo)

    bad_condition = compose()
    bad_condition["services"]["planner"]["depends_on"]["topics"]["condition"] = "done"
    assert schema_errors(bad_condition)

    unknown_key = compose()
    unknown_key["services"]["hotels"]["comand"] = ["worker", "hotels"]
    assert schema_errors(unknown_key)


# --- files ---------------------------------------------------------------------------------


def test_every_bind_mount_exists_in_the_repo() -> None:
    mounts = [(name, src) for name, svc in services().items() for src, _ in bind_mounts(svc)]
    assert mounts, "expected the Prometheus and Grafana bind mounts"
    for name, source in mounts:
        assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes", {}) or {})
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":")[0]
                if not source.startswith((".", "/", "~")):
                    assert source in declared, f"{name} uses undeclared volume {source}"


def test_every_build_context_and_dockerfile_exists() -> None:
    builds = {name: svc["build"] for name, svc in services().items() if "build" in svc}
    assert builds, "the itinerant services build the project image"
    for name, build in builds.items():
        context = ROOT / (build if isinstance(build, str) else build["context"])
        dockerfile = context / (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert context.is_dir(), f"{name}: no build context {context}"
        assert dockerfile.is_file(), f"{name}: no Dockerfile {dockerfile}"
        assert services()[name].get("image") == IMAGE, f"{name} builds another image"


DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_copies_existing_sources_and_runs_the_console_script() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copied: list[str] = []
    for op, args in instructions:
        if op == "COPY":
            *sources, _target = args.split()
            copied += [s for s in sources if not s.startswith("--")]
    assert copied
    for source in copied:
        if "*" in source:  # optional file, e.g. README.md*
            continue
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    # What the Dockerfile copies survives its .dockerignore (BuildKit: <Dockerfile>.dockerignore).
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    for source in copied:
        assert f"!{source.rstrip('*').rstrip('/')}" in [i.rstrip("/") for i in ignore], source
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "itinerant" in pyproject["project"]["scripts"]
    assert ("ENTRYPOINT", '["itinerant"]') in instructions
    env_line = " ".join(args for op, args in instructions if op == "ENV")
    for key in re.findall(r"\b(ITINERANT_\w+)=", env_line):
        assert key.removeprefix("ITINERANT_").lower() in Settings.model_fields, key


# --- commands and settings -----------------------------------------------------------------


def known_commands() -> set[tuple[str, ...]]:
    """CLI command paths the compose file may run, from the real CLI when it exists."""
    workers = {("worker", name) for name in mesh_settings().service_names()}
    try:
        import typer

        from itinerant.cli.main import app
    except ModuleNotFoundError as exc:  # the CLI package is not written yet
        if not (exc.name or "").startswith("itinerant.cli"):
            raise
        return workers | {("topics", "create")}
    root = typer.main.get_command(app)
    paths: set[tuple[str, ...]] = set()

    def visit(cmd: Any, path: tuple[str, ...]) -> None:
        if not hasattr(cmd, "list_commands"):  # a leaf command, not a group
            paths.add(path)
            return
        ctx = typer.Context(cmd)
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None:
                visit(sub, (*path, sub_name))

    visit(root, ())
    assert ("worker",) in paths, "the CLI has no `worker` command"
    return {p for p in paths if p != ("worker",)} | workers


def test_every_command_is_a_real_cli_command_or_service() -> None:
    commands = {name: tuple(command(svc)) for name, svc in itinerant_services().items()}
    known = known_commands()
    for name, cmd in commands.items():
        assert cmd in known, f"{name} runs `itinerant {' '.join(cmd)}`, not a known command"
    workers = {cmd[1]: name for name, cmd in commands.items() if cmd[0] == "worker"}
    assert set(workers) == set(mesh_settings().service_names()), "every service runs in compose"
    assert all(workers[s] == s for s in workers), "each compose service is named after its worker"
    assert commands["topics"] == ("topics", "create")


ONE_SHOT_JOBS = ("topics", "secrets")


def test_workers_wait_for_the_topics_and_secrets_jobs_and_topics_for_kafka() -> None:
    svcs = services()
    done = {"condition": "service_completed_successfully"}
    for name, svc in itinerant_services().items():
        if name in ONE_SHOT_JOBS:
            continue
        assert svc["depends_on"]["topics"] == done
        assert svc["depends_on"]["secrets"] == done
    assert svcs["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert svcs["secrets"].get("restart") == "no"
    assert svcs["topics"].get("restart") == "no"
    assert "healthcheck" in svcs["kafka"]


def test_flights_runs_two_replicas_that_split_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    flights = services()["flights"]
    replicas = flights["deploy"]["replicas"]
    assert replicas == 2
    assert "container_name" not in flights  # a fixed name would forbid a second replica
    assert not any(":" in str(p) for p in flights.get("ports", []))  # so would a host port
    settings = settings_from(environment(flights), monkeypatch)
    assert settings.partitions >= replicas, "each replica needs a partition of its own"


def test_every_itinerant_env_var_is_a_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ITINERANT_* variable is a framework setting (itinerant/settings.py) or one of the
    travel mesh's own (services/settings.py); the containers run the travel mesh on the compose
    Kafka."""
    fields = set(Settings.model_fields) | set(TravelSettings.model_fields)
    for name, svc in itinerant_services().items():
        env = environment(svc)
        assert env, f"{name} sets no environment"
        for key in env:
            if key in SETTINGS_ENV:
                continue
            if key.startswith("ITINERANT_"):
                field = key.removeprefix("ITINERANT_").lower()
                assert field in fields, f"{name}: {key} is not a setting"
        assert env["ITINERANT_BROKER"] == "external", name  # the services use the compose Kafka
        settings = settings_from(env, monkeypatch)
        TravelSettings()  # the travel mesh's settings parse from the same environment
        assert settings.app == "services.mesh:mesh", name
        assert settings.broker == "external", name
        assert settings.metrics_host == "0.0.0.0", name
        assert settings.llm_provider == "deterministic", name
        assert settings.llm_api_key is None and settings.llm_base_url is None, name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name


def test_services_reach_kafka_on_its_advertised_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = environment(services()["kafka"])
    assert services()["kafka"]["image"] == "apache/kafka:4.1.1"
    assert "broker" in (kafka["KAFKA_PROCESS_ROLES"] or "")
    assert "controller" in (kafka["KAFKA_PROCESS_ROLES"] or "")
    advertised = (kafka["KAFKA_ADVERTISED_LISTENERS"] or "").split(",")
    listeners = {entry.split("://")[0]: entry.split("://")[1] for entry in advertised}
    controllers = (kafka["KAFKA_CONTROLLER_LISTENER_NAMES"] or "").split(",")
    assert all(c in (kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] or "") for c in controllers)
    for name, svc in itinerant_services().items():
        settings = settings_from(environment(svc), monkeypatch)
        for server in settings.kafka_bootstrap_servers.split(","):
            assert server in listeners.values(), f"{name}: {server} is not advertised"


def test_jaeger_accepts_otlp_http() -> None:
    jaeger = services()["jaeger"]
    assert str(jaeger["image"]).startswith("jaegertracing/all-in-one")
    assert environment(jaeger)["COLLECTOR_OTLP_ENABLED"] == "true"
    ports = {str(p).split(":")[-1] for p in jaeger["ports"]}
    assert {"4318", "16686"} <= ports


# --- Prometheus and Grafana wiring -----------------------------------------------------------


def container_path(service: dict[str, Any], host: str) -> PurePosixPath:
    for source, target in bind_mounts(service):
        if (ROOT / source).resolve() == (ROOT / host).resolve():
            return PurePosixPath(target)
    raise AssertionError(f"{host} is not mounted")


def scrape_targets(config: dict[str, Any]) -> set[tuple[str, str, int]]:
    """(service, host, port) of each target of the ``itinerant`` job."""
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "itinerant"]
    assert len(jobs) == 1
    job = jobs[0]
    found: set[tuple[str, str, int]] = set()
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, port = target.rsplit(":", 1)
            found.add((static["labels"]["service"], host, int(port)))
    for dns in job.get("dns_sd_configs", []):
        assert dns.get("type") == "A"
        relabel = job["relabel_configs"]
        assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in relabel
        for host in dns["names"]:
            found.add((host, host, int(dns["port"])))
    return found


def expected_targets(settings: Settings, host: str | None) -> set[tuple[str, str, int]]:
    result = set()
    for service in settings.service_names():
        port = settings.metrics_port(service)
        assert port is not None
        result.add((service, host or service, port))
    return result


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_local_prometheus_scrapes_every_metrics_port(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from({}, monkeypatch)  # the defaults `itinerant up` uses, the mesh's
    config = load_yaml(PROMETHEUS_DIR / name)
    assert scrape_targets(config) == expected_targets(settings, settings.metrics_host)
    for rules in config["rule_files"]:
        assert (PROMETHEUS_DIR / rules).is_file()


def test_compose_prometheus_scrapes_every_replica_of_every_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prometheus = services()["prometheus"]
    mount = container_path(prometheus, "deploy/prometheus")
    flags = dict(arg.split("=", 1) for arg in prometheus["command"] if "=" in arg)
    config_path = PurePosixPath(flags["--config.file"])
    assert config_path.parent == mount
    config_file = PROMETHEUS_DIR / config_path.name
    assert config_file.name == "prometheus.compose.yml"
    config = load_yaml(config_file)
    for rules in config["rule_files"]:
        assert (PROMETHEUS_DIR / rules).is_file()
    for name, svc in itinerant_services().items():
        if name in ONE_SHOT_JOBS:
            continue
        settings = settings_from(environment(svc), monkeypatch)
        targets = {t for t in scrape_targets(config) if t[0] == name}
        assert targets == {(name, name, settings.metrics_port(name))}, name


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards() -> None:
    grafana = services()["grafana"]
    assert "3000:3000" in [str(p) for p in grafana["ports"]]
    provisioning = container_path(grafana, "deploy/grafana/provisioning")
    assert provisioning == PurePosixPath("/etc/grafana/provisioning")
    dashboards_mount = container_path(grafana, "deploy/grafana/dashboards")
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "itinerant.yml")
    (only,) = provider["providers"]
    assert only["type"] == "file"
    assert PurePosixPath(only["options"]["path"]) == dashboards_mount
    datasources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    prom = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1
    assert prom[0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in [str(p) for p in services()["prometheus"]["ports"]]


# --- generated from the mesh ---------------------------------------------------------------


def test_the_checked_in_deploy_files_are_what_deploy_render_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docker-compose.yml and the Prometheus targets follow the mesh: an agent added, removed or
    renamed without `itinerant deploy render` fails here, and the message says what to run."""
    from itinerant.cli import deploy
    from itinerant.mesh import load_mesh

    settings = settings_from({}, monkeypatch)
    rendered = deploy.render(ROOT, load_mesh(settings.app), settings)
    assert set(rendered) == {
        deploy.COMPOSE_FILE,
        *deploy.LOCAL_CONFIGS,
        deploy.COMPOSE_CONFIG,
    }
    stale = deploy.stale_files(ROOT, rendered)
    diffs = "".join(deploy.diff(ROOT, path, rendered[path]) for path in stale)
    assert not stale, (
        f"{', '.join(map(str, stale))} are not what the mesh renders: run "
        f"`itinerant deploy render` and commit the result.\n{diffs}"
    )


def test_every_agent_gets_its_metrics_port_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ports in the checked-in files are Settings.metrics_port's, for every service of the
    mesh (the coordinator's fixed slot, a per-name slot for each agent)."""
    settings = settings_from({}, monkeypatch)
    ports = {name: settings.metrics_port(name) for name in settings.service_names()}
    assert ports["coordinator"] == settings.metrics_port_base
    assert len(set(ports.values())) == len(ports), f"two services share a port: {ports}"
    compose_config = load_yaml(PROMETHEUS_DIR / "prometheus.compose.yml")
    assert {(s, p) for s, _, p in scrape_targets(compose_config)} == set(ports.items())
    for name in ("prometheus.yml", "prometheus.local.yml"):
        local = load_yaml(PROMETHEUS_DIR / name)
        assert {(s, p) for s, _, p in scrape_targets(local)} == set(ports.items()), name


def test_workers_read_the_keys_and_tokens_the_secrets_job_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The secrets job writes the volume; every worker mounts it read-only and its settings
    point into it, so all of them sign and verify with the same mesh keys."""
    svcs = itinerant_services()
    job = svcs["secrets"]
    assert job["command"] == ["secrets", "init"]
    assert "mesh-secrets:/secrets" in job["volumes"]
    job_settings = settings_from(environment(job), monkeypatch)
    assert job_settings.keys_dir is not None and job_settings.tokens_file is not None
    assert PurePosixPath(job_settings.keys_dir).is_relative_to("/secrets")
    assert PurePosixPath(job_settings.tokens_file).is_relative_to("/secrets")
    for name, svc in svcs.items():
        if name in ONE_SHOT_JOBS:
            continue
        assert "mesh-secrets:/secrets:ro" in svc["volumes"], name
        settings = settings_from(environment(svc), monkeypatch)
        assert (settings.keys_dir, settings.tokens_file) == (
            job_settings.keys_dir,
            job_settings.tokens_file,
        )
        assert settings.message_signing == "required"
    assert "mesh-secrets" in compose()["volumes"]
    coordinator = settings_from(environment(svcs["coordinator"]), monkeypatch)
    assert coordinator.coordinator_http_host == "0.0.0.0"  # published to the host, token-guarded
