"""``itinerant deploy render``: the deploy files, generated from the mesh.

What a deployment runs is the application's (``ITINERANT_APP``, the mesh's agents or
``ITINERANT_AGENTS``), so its files are rendered from it rather than edited by hand:

* ``docker-compose.yml``, whole, from the template below: Kafka, the topics job, one service per
  worker (the coordinator and every agent), Prometheus, Grafana, Jaeger;
* the ``itinerant`` scrape targets of ``deploy/prometheus/prometheus.yml``,
  ``prometheus.local.yml`` (services on this host, ``itinerant up``) and
  ``prometheus.compose.yml`` (the compose network): only the block between the
  ``# >>> itinerant deploy render`` and ``# <<< itinerant deploy render`` lines, the rest of
  those files (rule files, other jobs) stays as written.

Every port is :meth:`Settings.metrics_port`'s, at the defaults: the files do not depend on who
renders them, only on the mesh. ``--check`` renders, compares and exits 1 naming the stale
files (the unit tests do the same). The template lives here: change it, not docker-compose.yml.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from ruamel.yaml import YAML

from itinerant.errors import ItinerantError
from itinerant.mesh import Mesh
from itinerant.settings import Settings

from .context import cli_mesh, fail

COMPOSE_FILE = Path("docker-compose.yml")
PROMETHEUS_DIR = Path("deploy/prometheus")
#: Prometheus configurations scraping the services on this host (metrics on 127.0.0.1).
LOCAL_CONFIGS = (PROMETHEUS_DIR / "prometheus.yml", PROMETHEUS_DIR / "prometheus.local.yml")
#: The one docker-compose.yml's Prometheus loads (service names resolve on the compose network).
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus.compose.yml"
#: Partitions of every topic in compose: the most replicas an agent can use.
COMPOSE_PARTITIONS = 4
#: docker-compose.yml's own services; no agent may take their names.
COMPOSE_FIXED = ("kafka", "topics", "prometheus", "grafana", "jaeger")

BEGIN = "# >>> itinerant deploy render"
END = "# <<< itinerant deploy render"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # a compose service name and a DNS label
_PLAIN = re.compile(r"^[a-z][a-z0-9_-]*$")
_COUNTS = {2: "Two", 3: "Three", 4: "Four"}
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


class DeployError(ItinerantError):
    """The deploy files cannot be rendered (a bad name or replica count, a file's block gone)."""

    reason = "deploy_error"


def _default(field: str) -> Any:
    return Settings.model_fields[field].get_default(call_default_factory=True)


def deploy_settings(settings: Settings) -> Settings:
    """``settings``' application and agents, every other field at its default: what the
    rendered files assume, whoever renders them."""
    return Settings.model_construct(app=settings.app, agents=list(settings.agents))


def compose_settings(settings: Settings) -> Settings:
    """The settings a worker in docker-compose.yml reads from the environment rendered for it."""
    return deploy_settings(settings).model_copy(
        update={
            "broker": "external",
            "kafka_bootstrap_servers": "kafka:9092",
            "partitions": COMPOSE_PARTITIONS,
            "metrics_host": "0.0.0.0",
        }
    )


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar: plain when it cannot be read as anything but that string."""
    if _PLAIN.match(text) and text not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _check_names(settings: Settings) -> None:
    for name in settings.service_names():
        if not _NAME.match(name):
            raise DeployError(
                f"agent {name!r} cannot be a compose service or a DNS name",
                hint="name agents with lowercase letters, digits, '-' and '_'",
            )
        if name in COMPOSE_FIXED:
            raise DeployError(f"agent {name!r} takes the name of docker-compose.yml's {name}")


def replica_counts(
    mesh: Mesh, settings: Settings, replicas: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Replicas of each agent: ``replicas``, else the mesh's ``replicas``, else 1."""
    defaults = {k: v for k, v in mesh.replicas.items() if k in settings.agents}
    replicas = {**defaults, **(replicas or {})}
    unknown = sorted(set(replicas) - set(settings.agents))
    if unknown:
        raise DeployError(
            f"replicas of {', '.join(unknown)}: not an agent of the mesh",
            hint=f"agents: {', '.join(settings.agents)} (the coordinator runs once)",
        )
    for name, count in replicas.items():
        if not 1 <= count <= COMPOSE_PARTITIONS:
            raise DeployError(
                f"{name}: {count} replicas; between 1 and {COMPOSE_PARTITIONS}, the partitions "
                "of its topic (a replica without a partition idles)"
            )
    return {name: replicas.get(name, 1) for name in settings.agents}


# --- docker-compose.yml -----------------------------------------------------------------------

_COMPOSE_HEAD = """\
# The whole Itinerant mesh on one machine:
#   docker compose up --build -d
#   Grafana http://localhost:3000 (admin/admin; anonymous viewing on), Prometheus :9090,
#   Jaeger http://localhost:16686, the coordinator's saga view http://localhost:@HTTP@,
#   Kafka for tools on the host: localhost:9094.
# Kafka's log and each service's /data (the coordinator's saga state, the inbox stores) live as
# long as their containers: `docker compose restart` keeps them, `docker compose down` starts
# the next `up` from empty topics and empty state, consistently.
# An OpenAI-compatible LLM instead of the offline deterministic one:
#   ITINERANT_LLM_PROVIDER=openai ITINERANT_LLM_API_KEY=... docker compose up -d
#
# Generated by `itinerant deploy render` from the mesh @APP@ (the template is in
# itinerant/cli/deploy.py): after adding or renaming an agent run it again, do not edit here.
name: itinerant

# Shared by every container built from deploy/docker/Dockerfile.
x-itinerant-image: &itinerant-image
  image: itinerant:local
  build:
    context: .
    dockerfile: deploy/docker/Dockerfile

x-itinerant-env: &itinerant-env
  KAFKA_BOOTSTRAP_SERVERS: kafka:9092
  ITINERANT_BROKER: external
@MESH_ENV@  ITINERANT_PARTITIONS: "@PARTITIONS@"
  ITINERANT_DATA_DIR: /data
  # The signing keys and tokens the secrets job generates once (docs/security.md).
  ITINERANT_KEYS_DIR: /secrets/keys
  ITINERANT_TOKENS_FILE: /secrets/tokens.json
  ITINERANT_LOG_LEVEL: ${ITINERANT_LOG_LEVEL:-INFO}
  ITINERANT_METRICS_HOST: 0.0.0.0
  ITINERANT_METRICS_PORT_BASE: "@METRICS_BASE@"
  ITINERANT_LLM_PROVIDER: ${ITINERANT_LLM_PROVIDER:-deterministic}
  # Passed through from the host when set there, left unset otherwise.
  ITINERANT_LLM_BASE_URL:
  ITINERANT_LLM_API_KEY:
  ITINERANT_LLM_MODEL: ${ITINERANT_LLM_MODEL:-gpt-4o-mini}
  OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4318
  # The services' state (inbox, outbox, their tables, the sagas) in PostgreSQL, shared by replicas.
  # Another password: set ITINERANT_POSTGRES_PASSWORD and this URL with it.
  ITINERANT_STATE_URL: ${ITINERANT_STATE_URL:-postgresql://itinerant:itinerant@postgres:5432/itinerant}

# A worker runs once topics and secrets exist and PostgreSQL answers; the topics job runs once Kafka answers. Workers
# read the secrets; only the secrets job writes them.
x-itinerant-worker: &itinerant-worker
  <<: *itinerant-image
  environment: *itinerant-env
  volumes:
    - mesh-secrets:/secrets:ro
  depends_on:
    topics:
      condition: service_completed_successfully
    secrets:
      condition: service_completed_successfully
    postgres:
      condition: service_healthy
    jaeger:
      condition: service_started
  restart: unless-stopped

services:
  postgres:
    # The services' state store (ITINERANT_STATE_URL), the coordinator's sagas too.
    image: postgres:17.2
    environment:
      POSTGRES_USER: itinerant
      POSTGRES_PASSWORD: ${ITINERANT_POSTGRES_PASSWORD:-itinerant}
      POSTGRES_DB: itinerant
    volumes:
      - postgres-data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U itinerant -d itinerant"]
      interval: 5s
      timeout: 5s
      retries: 30
    restart: unless-stopped

  kafka:
    # Single-node KRaft: this one process is both broker and controller.
    image: apache/kafka:4.1.1
    hostname: kafka
    environment:
      CLUSTER_ID: 4L6g3nShT-eMCtK--X86sw
      KAFKA_NODE_ID: 1
      KAFKA_PROCESS_ROLES: broker,controller
      KAFKA_LISTENERS: PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:9094
      # kafka:9092 for the other containers, localhost:9094 for the host.
      KAFKA_ADVERTISED_LISTENERS: PLAINTEXT://kafka:9092,HOST://localhost:9094
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,HOST:PLAINTEXT
      KAFKA_CONTROLLER_LISTENER_NAMES: CONTROLLER
      KAFKA_INTER_BROKER_LISTENER_NAME: PLAINTEXT
      KAFKA_CONTROLLER_QUORUM_VOTERS: 1@kafka:9093
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: 1
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: 1
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: 1
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: 0
      KAFKA_NUM_PARTITIONS: @PARTITIONS@
      KAFKA_LOG_DIRS: /tmp/kraft-combined-logs
    ports:
      - "9094:9094"
    healthcheck:
      test:
        - CMD-SHELL
        - /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092 > /dev/null 2>&1
      interval: 5s
      timeout: 10s
      retries: 30
      start_period: 15s
    restart: unless-stopped

  topics:
    # One-shot: creates every topic (idempotent), then exits 0.
    <<: *itinerant-image
    command: ["topics", "create"]
    environment: *itinerant-env
    depends_on:
      kafka:
        condition: service_healthy
    restart: "no"

  secrets:
    # One-shot: the keys every service signs with and the operators' tokens, generated into the
    # mesh-secrets volume when missing (kept across restarts), then exits 0.
    <<: *itinerant-image
    command: ["secrets", "init"]
    environment: *itinerant-env
    volumes:
      - mesh-secrets:/secrets
    restart: "no"

"""  # noqa: E501 (the Kafka healthcheck's command line)

_COMPOSE_TAIL = """\
  prometheus:
    image: prom/prometheus:v2.55.1
    command:
      - --config.file=/etc/prometheus/prometheus.compose.yml
      - --storage.tsdb.path=/prometheus
      - --storage.tsdb.retention.time=7d
      - --web.enable-lifecycle
    volumes:
      - ./deploy/prometheus:/etc/prometheus:ro
      - prometheus-data:/prometheus
    ports:
      - "9090:9090"
    restart: unless-stopped

  grafana:
    image: grafana/grafana:11.3.0
    environment:
      GF_SECURITY_ADMIN_USER: admin
      GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:-admin}
      GF_AUTH_ANONYMOUS_ENABLED: "true"
      GF_AUTH_ANONYMOUS_ORG_ROLE: Viewer
      GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: /var/lib/grafana/dashboards/overview.json
    volumes:
      - ./deploy/grafana/provisioning:/etc/grafana/provisioning:ro
      - ./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro
    ports:
      - "3000:3000"
    depends_on:
      - prometheus
    restart: unless-stopped

  jaeger:
    image: jaegertracing/all-in-one:1.62.0
    environment:
      COLLECTOR_OTLP_ENABLED: "true"
    ports:
      - "16686:16686" # UI
      - "4317:4317" # OTLP/gRPC
      - "4318:4318" # OTLP/HTTP (the services export here)
    restart: unless-stopped

volumes:
  prometheus-data:
  mesh-secrets:
  postgres-data:
"""


def _mesh_env(mesh: Mesh, settings: Settings) -> str:
    """The environment lines that choose the application (and its agents, when not the
    mesh's own), so every container runs what was rendered."""
    lines = [f"  ITINERANT_APP: {json.dumps(settings.app)}\n"]
    if list(settings.agents) != [a.name for a in mesh.agents]:
        lines.append(f"  ITINERANT_AGENTS: {json.dumps(json.dumps(list(settings.agents)))}\n")
    return "".join(lines)


def _worker_service(name: str, settings: Settings, replicas: int, http_port: int) -> list[str]:
    key = _scalar(name)
    lines = [
        f"  {key}:",
        "    <<: *itinerant-worker",
        f'    command: ["worker", {json.dumps(name)}]',
    ]
    if name == "coordinator":
        lines += [
            "    environment:",
            "      <<: *itinerant-env",
            f'      ITINERANT_COORDINATOR_HTTP_PORT: "{http_port}"',
            "      # Reachable from the host; it needs an operator token (/secrets/tokens.json).",
            "      ITINERANT_COORDINATOR_HTTP_HOST: 0.0.0.0",
            "    ports:",
            f'      - "{http_port}:{http_port}"',
        ]
    if replicas > 1:
        lines += [
            f"    # {_COUNTS.get(replicas, str(replicas))} replicas in one consumer group split "
            "the partitions of "
            f"{settings.agent_topic(name)};",
            "    # Prometheus finds them all through DNS "
            "(deploy/prometheus/prometheus.compose.yml).",
            "    deploy:",
            f"      replicas: {replicas}",
        ]
    return [*lines, ""]


def render_compose(
    mesh: Mesh, settings: Settings, replicas: Mapping[str, int] | None = None
) -> str:
    """docker-compose.yml for ``settings``' application and agents."""
    _check_names(settings)
    counts = replica_counts(mesh, settings, replicas)
    http_port = int(_default("coordinator_http_port"))
    head = (
        _COMPOSE_HEAD.replace("@APP@", settings.app)
        .replace("@HTTP@", str(http_port))
        .replace("@MESH_ENV@", _mesh_env(mesh, settings))
        .replace("@PARTITIONS@", str(COMPOSE_PARTITIONS))
        .replace("@METRICS_BASE@", str(_default("metrics_port_base")))
    )
    services: list[str] = []
    for name in settings.service_names():
        services += _worker_service(name, settings, counts.get(name, 1), http_port)
    text = head + "\n".join(services) + "\n" + _COMPOSE_TAIL
    _verify_compose(text, settings, counts)
    return text


def _verify_compose(text: str, settings: Settings, counts: Mapping[str, int]) -> None:
    """The rendered file reads back as the services it was rendered for (names quoted right)."""
    parsed = YAML(typ="safe", pure=True).load(text)
    for name in settings.service_names():
        service = parsed["services"].get(name)
        if service is None or service.get("command") != ["worker", name]:
            raise AssertionError(f"docker-compose.yml does not read back service {name!r}")
        if counts.get(name, 1) > 1 and service["deploy"]["replicas"] != counts[name]:
            raise AssertionError(f"docker-compose.yml does not read back {name}'s replicas")


# --- Prometheus -----------------------------------------------------------------------------


def metrics_ports(settings: Settings) -> dict[str, int]:
    """The metrics port of each service (the coordinator and every agent)."""
    ports: dict[str, int] = {}
    for name in settings.service_names():
        port = settings.metrics_port(name)
        if port is None:
            raise DeployError("metrics are off (ITINERANT_METRICS_PORT_BASE=0): nothing to scrape")
        ports[name] = port
    return ports


def _block_comment(settings: Settings) -> list[str]:
    return [
        BEGIN,
        f"# The services of {settings.app} at their metrics ports: Settings.metrics_port,",
        f"# base {settings.metrics_port_base}, the coordinator +0, each agent a slot of its own "
        "name.",
        "# Generated: after changing the mesh run `itinerant deploy render`, do not edit here.",
    ]


def local_targets(settings: Settings) -> list[str]:
    """The ``itinerant`` job's targets on this host, as lines of YAML (no indentation)."""
    host = settings.metrics_host
    lines = [*_block_comment(settings), "static_configs:"]
    for name, port in metrics_ports(settings).items():
        lines += [
            f"  - targets: [{json.dumps(f'{host}:{port}')}]",
            "    labels:",
            f"      service: {_scalar(name)}",
        ]
    return [*lines, END]


def compose_targets(settings: Settings) -> list[str]:
    """The ``itinerant`` job's targets on the compose network: every replica, by DNS."""
    lines = [*_block_comment(settings), "dns_sd_configs:"]
    for name, port in metrics_ports(settings).items():
        lines += [
            f"  - names: [{_scalar(name)}]",
            "    type: A",
            f"    port: {port}",
            "    refresh_interval: 15s",
        ]
    return [*lines, END]


def splice(text: str, block: Sequence[str], where: Path) -> str:
    """``text`` with the lines from ``BEGIN`` to ``END`` replaced by ``block``, indented as the
    ``BEGIN`` line is."""
    lines = text.splitlines()
    begins = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.strip().startswith(END)]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise DeployError(
            f"{where} has no generated block (one line '{BEGIN}', then one '{END}')",
            hint="put both lines back where the itinerant job's targets go, then render",
        )
    begin, end = begins[0], ends[0]
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    generated = [indent + line for line in block]
    return "\n".join([*lines[:begin], *generated, *lines[end + 1 :]]) + "\n"


# --- all files -------------------------------------------------------------------------------


def render(
    root: Path,
    mesh: Mesh,
    settings: Settings,
    replicas: Mapping[str, int] | None = None,
) -> dict[Path, str]:
    """Each deploy file (relative to ``root``, the repository) as rendered for ``settings``'
    application and agents; the Prometheus files keep what lies outside their block."""
    local = deploy_settings(settings)
    in_compose = compose_settings(settings)
    rendered = {COMPOSE_FILE: render_compose(mesh, local, replicas)}
    configs = [(path, local_targets(local)) for path in LOCAL_CONFIGS]
    for path, block in [*configs, (COMPOSE_CONFIG, compose_targets(in_compose))]:
        try:
            current = (root / path).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DeployError(f"{root / path} is missing") from exc
        rendered[path] = splice(current, block, path)
    return rendered


def stale_files(root: Path, rendered: Mapping[Path, str]) -> list[Path]:
    """The files whose content on disk is not ``rendered``'s."""
    stale = []
    for path, text in rendered.items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def diff(root: Path, path: Path, text: str) -> str:
    target = root / path
    current = target.read_text(encoding="utf-8") if target.is_file() else ""
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{path} (checked in)",
            tofile=f"{path} (rendered)",
        )
    )


# --- the command ----------------------------------------------------------------------------

deploy_app = typer.Typer(
    help="Deploy files generated from the mesh (docker-compose.yml, Prometheus targets).",
    no_args_is_help=True,
)


def _parse_replicas(values: Sequence[str]) -> dict[str, int]:
    result: dict[str, int] = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or not count.strip().isdigit():
            raise fail(f"--replicas takes NAME=N (e.g. myagent=2), not {value!r}", 2)
        result[name.strip()] = int(count)
    return result


@deploy_app.command("render")
def render_command(
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="write nothing; exit 1 naming the files that are not as rendered"
        ),
    ] = False,
    replicas: Annotated[
        list[str] | None,
        typer.Option(
            "--replicas",
            help="NAME=N: replicas of an agent in docker-compose.yml (repeatable; by default "
            "the mesh's `replicas`, every other agent 1). Give --check the same.",
        ),
    ] = None,
    root: Annotated[
        Path, typer.Option(help="the repository holding docker-compose.yml and deploy/")
    ] = Path("."),
    show_diff: Annotated[
        bool, typer.Option("--diff/--no-diff", help="with --check, print what would change")
    ] = True,
) -> None:
    """Render docker-compose.yml and the Prometheus scrape targets from the mesh
    (ITINERANT_APP or --app, its agents or ITINERANT_AGENTS); metrics ports are
    Settings.metrics_port's."""
    mesh, settings = cli_mesh()
    try:
        rendered = render(root, mesh, settings, _parse_replicas(replicas) if replicas else None)
    except ItinerantError as exc:
        raise fail(exc.describe(), 2) from exc
    stale = stale_files(root, rendered)
    if check:
        if not stale:
            typer.echo(f"deploy files are up to date with {settings.app}")
            return
        if show_diff:
            for path in stale:
                typer.echo(diff(root, path, rendered[path]), nl=False)
        names = ", ".join(str(p) for p in stale)
        raise fail(f"stale: {names}; run `itinerant deploy render` and commit the result", 1)
    for path, text in rendered.items():
        if path in stale:
            (root / path).write_text(text, encoding="utf-8")
            typer.echo(f"  wrote     {path}")
        else:
            typer.echo(f"  unchanged {path}")
    for name, port in metrics_ports(deploy_settings(settings)).items():
        typer.echo(f"  {name:<14} metrics port {port}")


__all__ = [
    "DeployError",
    "deploy_app",
    "render",
    "render_compose",
    "stale_files",
]
