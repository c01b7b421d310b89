"""Typed settings read from the environment (``ITINERANT_*`` and ``KAFKA_BOOTSTRAP_SERVERS``)."""

from __future__ import annotations

import json
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from itinerant.wire.budget import DEFAULT_MAX_TOOL_CALLS


def _kafka_alias(name: str) -> AliasChoices:
    """``KAFKA_<NAME>`` or ``ITINERANT_KAFKA_<NAME>``, as KAFKA_BOOTSTRAP_SERVERS."""
    return AliasChoices(f"KAFKA_{name.upper()}", f"ITINERANT_KAFKA_{name.upper()}")


#: Metrics port slots below the agents' (``metrics_port``): fixed, whatever the mesh holds.
FIXED_PORT_SLOTS = {"coordinator": 0, "agents": 1, "gateway": 2, "mcp": 3}
AGENT_PORT_SLOTS = range(10, 100)
#: Replica r of a service exposes metrics ``(r - 1) * REPLICA_PORT_STRIDE`` above replica 1.
REPLICA_PORT_STRIDE = 100
MAX_REPLICAS = 16


def replica_name(service: str, replica: int) -> str:
    """A replica's process name: the service's for the first, ``<service>-<r>`` after it."""
    return service if replica == 1 else f"{service}-{replica}"


class Settings(BaseSettings):
    """Every knob of the system. Each field reads ``ITINERANT_<FIELD>`` unless noted."""

    model_config = SettingsConfigDict(env_prefix="ITINERANT_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "ITINERANT_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Kafka bootstrap servers (host:port[,host:port]).",
    )
    # -- broker security (docs/security.md#the-broker) ----------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        validation_alias=_kafka_alias("security_protocol"),
        description="How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or "
        "SASL_SSL (SASL over TLS).",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512",
        validation_alias=_kafka_alias("sasl_mechanism"),
        description="SASL mechanism of the SASL_* protocols.",
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        validation_alias=_kafka_alias("sasl_username"),
        description="SASL user (the principal `User:<name>` the broker's ACLs name).",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        validation_alias=_kafka_alias("sasl_password"),
        description="SASL password (a secret: never logged, handed to child processes).",
    )
    kafka_ssl_ca_file: Path | None = Field(
        default=None,
        validation_alias=_kafka_alias("ssl_ca_file"),
        description="PEM file of the CA(s) that signed the brokers' certificates (default: the "
        "system's trust store).",
    )
    kafka_ssl_cert_file: Path | None = Field(
        default=None,
        validation_alias=_kafka_alias("ssl_cert_file"),
        description="PEM client certificate, for brokers that require mutual TLS.",
    )
    kafka_ssl_key_file: Path | None = Field(
        default=None,
        validation_alias=_kafka_alias("ssl_key_file"),
        description="PEM private key of KAFKA_SSL_CERT_FILE.",
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None,
        validation_alias=_kafka_alias("ssl_key_password"),
        description="Password of an encrypted KAFKA_SSL_KEY_FILE.",
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True,
        validation_alias=_kafka_alias("ssl_check_hostname"),
        description="Check that the broker's certificate names the host connected to.",
    )
    embedded_kafka_security: Literal["off", "sasl_ssl"] = Field(
        default="off",
        description="`sasl_ssl`: the embedded Apache Kafka takes only SASL_SSL clients "
        "(SCRAM-SHA-512, a CA and certificates generated under <data_dir>/broker-security) and "
        "gives each service principal only the ACLs its steps need.",
    )
    broker: Literal["kafka", "tansu", "external"] = Field(
        default="kafka",
        description="`itinerant up` starts the embedded Apache Kafka (`kafka`), the no-Java "
        "development broker (`tansu`), or none (`external`: the Kafka at "
        "KAFKA_BOOTSTRAP_SERVERS).",
    )
    kafka_home: Path | None = Field(
        default=None,
        description="Folder whose libs/ holds the Apache Kafka jars (default: the .kafka folder "
        "`make install` fills).",
    )
    kafka_heap_mb: int = Field(default=512, ge=128, description="Embedded Kafka's JVM heap.")
    topic_prefix: str = Field(default="itinerant.", description="Prefix of every topic name.")
    partitions: int = Field(default=4, ge=1, description="Partitions of every topic we create.")
    replication_factor: int = Field(default=1, ge=1, description="Replication factor of topics.")
    data_dir: Path = Field(
        default=Path(".itinerant"), description="State databases, logs, traces, run files."
    )
    state_url: SecretStr | None = Field(
        default=None,
        description="The agents' state store: a `postgresql://user:password@host:port/db` URL "
        "puts every agent's inbox, outbox and tables in PostgreSQL, one schema per agent, shared "
        "by its replicas. Unset: one SQLite file per agent under <data_dir>/state.",
    )
    layout: Literal["process-per-service", "shared"] = Field(
        default="process-per-service",
        description="`itinerant up`: one process per service, or the agents sharing one process.",
    )
    app: str = Field(
        default="services.mesh:mesh",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="The application: `package.module:mesh`, a Mesh naming its agents and flows.",
    )
    agents: list[str] = Field(
        default_factory=list,
        description="Agents to run, JSON list (default: the mesh's; its optional agents, e.g. "
        "diagnostics, only when listed).",
    )
    entry_step: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_-]+\.[a-z0-9_-]+$",
        description="agent.action every new request starts at (default: the mesh's entry).",
    )

    fetch_wait_ms: int | None = Field(
        default=None,
        ge=1,
        description="Consumer fetch wait; default 500 ms (Kafka wakes a waiting fetch when data "
        "arrives), 10 ms on Tansu (which does not).",
    )
    session_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Consumer group session (a dead worker is noticed after it); default 3 s on "
        "an embedded single broker, 10 s on an external Kafka (whose "
        "group.min.session.timeout.ms is 6 s unless changed) or with replicated topics.",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once: each batch of records commits its outputs and its input "
        "offsets in one Kafka transaction and consumers read committed records only, so a saga's "
        "result is on the results topic once (Apache Kafka only; docs/architecture.md"
        "#exactly-once-results).",
    )
    transaction_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=900,
        description="Kafka aborts a transaction left open longer (a frozen or dead worker's).",
    )
    batch_max: int = Field(
        default=100, ge=1, description="Records whose outputs may be in progress at once, at most."
    )
    topic_retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, ge=-1, description="retention.ms of the topics we create."
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="min.insync.replicas of the topics we create (default: 2 when replicated).",
    )
    producer_linger_ms: float = Field(default=2.0, ge=0, description="Producer batching delay.")
    broker_timeout_s: float = Field(default=5.0, gt=0, description="How long to wait for Kafka.")

    max_message_bytes: int = Field(
        default=262_144, ge=1024, description="Largest message value we accept or send."
    )
    max_slip_bytes: int = Field(default=8_192, ge=256, description="Largest routing slip header.")
    max_attempts: int = Field(default=4, ge=1, description="Tries of a retryable failure.")
    retry_base_delay_s: float = Field(default=0.2, ge=0, description="First backoff delay.")
    retry_max_delay_s: float = Field(default=2.0, ge=0, description="Largest backoff delay.")

    circuit_threshold: int = Field(default=5, ge=1, description="Failures that open a circuit.")
    circuit_reset_s: float = Field(default=10.0, gt=0, description="Open circuit's cool-down.")

    default_max_hops: int = Field(
        default=20, ge=1, description="Hop budget of a request, and the most one may ask for."
    )
    default_deadline_s: float = Field(
        default=120.0, gt=0, description="Deadline of a request, and the longest one may ask for."
    )
    default_max_tokens: int = Field(default=20_000, ge=0, description="Token budget.")
    default_max_cost_usd: float = Field(default=1.0, ge=0, description="LLM spend budget.")
    default_max_tool_calls: int = Field(
        default=DEFAULT_MAX_TOOL_CALLS, ge=0, description="Tool-call budget (MCP tools)."
    )
    step_timeout_s: float = Field(default=60.0, gt=0, description="A step stuck longer fails.")
    timer_interval_s: float = Field(default=1.0, gt=0, description="Coordinator timer tick.")

    metrics_port_base: int = Field(
        default=9400, ge=0, description="Service i exposes metrics on base+i (0 = off)."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the metrics endpoints bind (0.0.0.0 in containers).",
    )
    replica: int = Field(
        default=1,
        ge=1,
        le=MAX_REPLICAS,
        description="This process's number among its service's replicas (`up --replicas`).",
    )
    coordinator_http_port: int = Field(default=8470, ge=0, description="Saga HTTP view.")
    gateway_host: str = Field(default="127.0.0.1", description="Address the A2A gateway binds.")
    gateway_port: int = Field(
        default=8480, ge=0, le=65535, description="A2A gateway port (0: `up` does not start it)."
    )
    console_host: str = Field(
        default="127.0.0.1", description="Address the operator web console binds."
    )
    console_port: int = Field(
        default=8490,
        ge=0,
        le=65535,
        description="Operator web console port (0: `up` does not start it).",
    )
    console_session_s: float = Field(
        default=43_200.0,
        gt=0,
        description="How long a console login lasts before the operator's token is asked again.",
    )
    console_sample_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the console samples the services' metrics for its charts.",
    )
    console_history_s: float = Field(
        default=900.0,
        gt=0,
        description="How far back the console's charts go (samples kept in memory).",
    )
    gateway_token: SecretStr | None = Field(
        default=None, description="Bearer token of the A2A principal `default`."
    )
    gateway_max_body_bytes: int = Field(
        default=262_144, ge=1024, description="Largest A2A request body (HTTP 413 beyond)."
    )
    gateway_public_url: str | None = Field(
        default=None, description="URL in the agent card (default http://<host>:<port>/)."
    )
    log_level: str = Field(default="INFO", description="Log level of the services.")

    llm_provider: Literal["deterministic", "openai"] = Field(
        default="deterministic", description="`deterministic` works offline; `openai` calls an API."
    )
    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL.")
    llm_api_key: SecretStr | None = Field(default=None, description="API key for the LLM.")
    llm_model: str = Field(default="gpt-4o-mini", description="Model name for the LLM.")
    llm_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one LLM call.")
    llm_models: dict[str, str] = Field(
        default_factory=dict,
        description='Model per agent, JSON (e.g. {"writer": "gpt-4o"}); others use '
        "ITINERANT_LLM_MODEL.",
    )
    llm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": (0.15, 0.60),
            "gpt-4o": (2.50, 10.00),
            "default": (1.00, 3.00),
        },
        description="USD per 1M prompt and completion tokens by model, JSON; `default` prices "
        "any other model.",
    )
    approval_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long a saga waits for an approval (and never past its deadline).",
    )

    # -- message authentication (docs/security.md#messages) ------------------------------------
    message_signing: Literal["required", "off"] = Field(
        default="required",
        description="`required`: every service signs what it sends (Ed25519) and dead-letters "
        "unsigned or wrongly signed messages as `unauthenticated`; `off` only for benchmarks.",
    )
    keys_dir: Path | None = Field(
        default=None,
        description="Folder of the mesh's keys: `<principal>.key` (private, 0600) and "
        "`public.json` (every principal's public key). Default: <data_dir>/keys, generated by "
        "`itinerant up` for a local mesh.",
    )
    signing_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Private keys of the principals this process signs as, JSON "
        '{"principal": "<base64 Ed25519 seed>"}; adds to (and wins over) keys_dir.',
    )
    trusted_keys: dict[str, str] = Field(
        default_factory=dict,
        description='Public keys of the mesh, JSON {"principal": "<base64>"}; adds to '
        "keys_dir/public.json.",
    )
    approvers: list[str] = Field(
        default_factory=lambda: ["operator"],
        description="Principals whose signed decisions pass an approval gate, JSON list.",
    )
    operators: list[str] = Field(
        default_factory=lambda: ["operator"],
        description="Principals that may act for any customer and on dead letters.",
    )
    delegates: list[str] = Field(
        default_factory=lambda: ["gateway"],
        description="Principals that publish requests on behalf of their callers (the "
        "`ce_customer` header they sign names the caller), JSON list.",
    )
    operator: str = Field(
        default="operator",
        pattern=r"^[a-z0-9_.-]{1,64}$",
        description="The principal the CLI signs operator decisions as (its key in keys_dir).",
    )

    # -- callers and tokens (docs/security-gateway.md) -----------------------------------------
    tokens_file: Path | None = Field(
        default=None,
        description="The callers' and operators' generated tokens (0600). Default: "
        "<data_dir>/tokens.json, written by `itinerant up` or `itinerant secrets init`.",
    )
    gateway_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Callers of the A2A gateway, JSON {"principal": "<token>"}; each sees and '
        "cancels only its own tasks (principals in ITINERANT_OPERATORS see all). Unset with no "
        "ITINERANT_GATEWAY_TOKEN: `itinerant up` generates one in <data_dir>/tokens.json.",
    )
    operator_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Operators\' tokens, JSON {"principal": "<token>"} (principals in '
        "ITINERANT_OPERATORS): the coordinator's saga view requires one, the CLI sends "
        "ITINERANT_OPERATOR's. Unset: `itinerant up` generates one in <data_dir>/tokens.json.",
    )
    gateway_rate_per_s: float = Field(
        default=20.0, gt=0, description="A2A requests per second per principal (HTTP 429 beyond)."
    )
    gateway_rate_burst: int = Field(
        default=40, ge=1, description="A2A requests a principal may send at once above the rate."
    )
    gateway_max_streams: int = Field(
        default=8, ge=1, description="Open SSE streams per principal (HTTP 429 beyond)."
    )
    coordinator_http_host: str = Field(
        default="127.0.0.1", description="Address the coordinator's saga HTTP view binds."
    )

    # -- the mesh as an MCP server (docs/mcp.md) -----------------------------------------------
    mcp_host: str = Field(default="127.0.0.1", description="Address the MCP server binds.")
    mcp_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="MCP server port, streamable HTTP at /mcp (0: `up` does not start it).",
    )
    mcp_token: SecretStr | None = Field(
        default=None,
        description="The token `itinerant mcp serve --stdio` acts with (a caller's or an "
        "operator's, from the gateway's tokens).",
    )
    mcp_max_wait_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Longest `wait_s` of the MCP tool publish_request (longer waits are cut).",
    )

    # -- MCP servers agents call (docs/mcp.md#agents-calling-mcp-tools) ----------------------
    mcp_tool_servers: dict[str, str] = Field(
        default_factory=dict,
        description="Where the MCP servers agents declare are: name -> URL (http...) or stdio "
        "command line; overrides an agent's own declaration.",
    )
    mcp_tool_timeout_s: float = Field(
        default=20.0, gt=0, description="Longest wait for one MCP tool call's answer."
    )

    # -- growth (docs/operations.md#growth) ---------------------------------------------------
    log_max_bytes: int = Field(
        default=50_000_000,
        ge=10_000,
        description="A service's log or traces file past this size is rotated to <file>.1.",
    )
    log_keep: int = Field(default=3, ge=1, description="Rotated copies kept of each file.")
    inbox_retention_s: float = Field(
        default=7 * 86_400,
        gt=0,
        description="Processed-message ids (inbox) and sent outbox rows older than this are "
        "pruned; keep it above the topics' retention, the longest a record can be redelivered.",
    )
    prune_interval_s: float = Field(
        default=3_600, gt=0, description="How often each service prunes its inbox and outbox."
    )

    # -- supervision (docs/operations.md#supervision) ----------------------------------------
    restart_healthy_after_s: float = Field(
        default=60.0,
        gt=0,
        description="A service that ran this long before exiting is restarted from the "
        "shortest backoff again.",
    )
    restart_give_up_after: int = Field(
        default=5,
        ge=1,
        description="`itinerant up` stops (exit 1) when a service failed this many times in a "
        "row, each sooner than ITINERANT_RESTART_HEALTHY_AFTER_S after its start.",
    )

    # -- input bounds (docs/security.md#bounded-inputs) ------------------------------------
    max_headers: int = Field(
        default=64, ge=16, description="Most headers a message may carry (checked on decode)."
    )
    max_header_bytes: int = Field(
        default=4_096,
        ge=512,
        description="Largest header, name and value (the slip and the budget have their own).",
    )
    max_headers_total_bytes: int = Field(
        default=32_768, ge=4_096, description="Largest sum of a message's headers."
    )
    max_budget_bytes: int = Field(default=1_024, ge=128, description="Largest budget header.")
    max_saga_id_chars: int = Field(
        default=200, ge=64, description="Longest saga id (request_id, ce_sagaid)."
    )

    @model_validator(mode="after")
    def _check_broker_security(self) -> Settings:
        problems = broker_security_problems(self)
        if self.transactional and self.broker == "tansu":
            problems.append(
                "ITINERANT_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, which "
                "Tansu does not offer: use ITINERANT_BROKER=kafka (or external), or at_least_once"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable a field is handed to child processes in (its first alias)."""
        alias = cls.model_fields[name].validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            return alias.choices[0]
        return f"ITINERANT_{name.upper()}"

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol.endswith("SSL")

    @property
    def embedded(self) -> bool:
        """True when `itinerant up` runs the broker itself."""
        return self.broker != "external"

    @property
    def consumer_fetch_wait_ms(self) -> int:
        if self.fetch_wait_ms is not None:
            return self.fetch_wait_ms
        return 10 if self.broker == "tansu" else 500

    @property
    def consumer_session_timeout_s(self) -> float:
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        # Replicated: a dead broker blocks acks=all commits (and the heartbeats queued behind
        # them on the same connection) until it is fenced, ~5 s; a 3 s session would expire.
        return 10.0 if self.broker == "external" or self.replication_factor > 1 else 3.0

    @property
    def topic_min_insync_replicas(self) -> int:
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return min(2, self.replication_factor)

    @property
    def record_max_bytes(self) -> int:
        """The largest record (key, value and headers) our producers send: their
        ``message.max.bytes``. A dead letter is cut to fit it
        (docs/architecture.md#oversized-dead-letters)."""
        return max(self.max_message_bytes * 2, 1_000_000)

    @property
    def topic_max_message_bytes(self) -> int:
        """``max.message.bytes`` of the topics we create: a record batch of one record of
        ``record_max_bytes``, with room for its framing (Kafka's own default at the least)."""
        return max(self.record_max_bytes + 48_588, 1_048_588)

    @property
    def transactional(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def idempotent_producer(self) -> bool:
        """Idempotent producers everywhere but on Tansu, which has no reliable support."""
        return self.broker != "tansu"

    def llm_model_for(self, agent: str) -> str:
        return self.llm_models.get(agent, self.llm_model)

    def llm_price(self, model: str) -> tuple[float, float]:
        """USD per 1M (prompt, completion) tokens of ``model``."""
        return self.llm_prices.get(model) or self.llm_prices.get("default") or (0.0, 0.0)

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
            key = self.env_name(name)
            if value is None:
                continue
            if isinstance(value, list | dict):
                env[key] = json.dumps(value)
            elif isinstance(value, bool):
                env[key] = "true" if value else "false"
            else:
                env[key] = str(value)
        # Secrets dump as "**********": hand children the real values (never logged).
        for name in type(self).model_fields:
            value = getattr(self, name)
            key = self.env_name(name)
            if isinstance(value, SecretStr):
                env[key] = value.get_secret_value()
            elif isinstance(value, dict) and any(isinstance(v, SecretStr) for v in value.values()):
                env[key] = json.dumps(
                    {
                        k: v.get_secret_value() if isinstance(v, SecretStr) else v
                        for k, v in value.items()
                    }
                )
        return env

    def topic(self, name: str) -> str:
        """Full topic name for a logical name (``requests``, ``agent.greeter``, ...)."""
        return f"{self.topic_prefix}{name}"

    def agent_topic(self, agent: str) -> str:
        return self.topic(f"agent.{agent}")

    @property
    def requests_topic(self) -> str:
        return self.topic("requests")

    @property
    def results_topic(self) -> str:
        return self.topic("results")

    @property
    def events_topic(self) -> str:
        return self.topic("saga.events")

    @property
    def dlq_topic(self) -> str:
        return self.topic("dlq")

    @property
    def dlq_actions_topic(self) -> str:
        """Operators' replays and discards, keyed by DLQ entry id."""
        return self.topic("dlq.actions")

    def all_topics(self) -> list[str]:
        fixed = [
            self.requests_topic,
            self.results_topic,
            self.events_topic,
            self.dlq_topic,
            self.dlq_actions_topic,
        ]
        return fixed + [self.agent_topic(a) for a in self.agents]

    def service_names(self) -> list[str]:
        return ["coordinator", *self.agents]

    def worker_processes(self) -> list[str]:
        """The worker processes `itinerant up` starts, by layout."""
        if self.layout == "shared":
            return ["coordinator", "agents"]
        return self.service_names()

    def metrics_port(self, service: str, replica: int | None = None) -> int | None:
        """``metrics_port_base`` plus the service's slot: fixed for the coordinator, the shared
        agents process and the gateway; for an agent, derived from its name (stable when agents
        are added or reordered; a clash moves the later agent, in ``agents`` order, on). Replica
        r (default: this process's) is ``(r - 1) * REPLICA_PORT_STRIDE`` above the first."""
        if self.metrics_port_base == 0:
            return None
        offset = ((replica or self.replica) - 1) * REPLICA_PORT_STRIDE
        return self.metrics_port_base + offset + self._metrics_slot(service)

    def _metrics_slot(self, service: str) -> int:
        if service in FIXED_PORT_SLOTS:
            return FIXED_PORT_SLOTS[service]
        taken: set[int] = set()
        for name in [*self.agents, *([service] if service not in self.agents else [])]:
            slot = _slot(name, taken)
            taken.add(slot)
            if name == service:
                return slot
        raise AssertionError("unreachable")


def broker_security_problems(settings: Settings) -> list[str]:
    """What is wrong with the broker security settings, each saying what to set."""
    problems = []
    missing_login = settings.kafka_sasl_username is None or settings.kafka_sasl_password is None
    # A local secure broker (ITINERANT_EMBEDDED_KAFKA_SECURITY) fills the login in itself.
    if settings.kafka_sasl and missing_login and settings.embedded_kafka_security == "off":
        problems.append(
            f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs a SASL user "
            "and password: set KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        )
    if not settings.kafka_sasl and settings.kafka_sasl_username is not None:
        problems.append(
            f"KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL is "
            f"{settings.kafka_security_protocol}: set it to SASL_SSL (or SASL_PLAINTEXT), or "
            "unset KAFKA_SASL_USERNAME"
        )
    tls_files = {
        "KAFKA_SSL_CA_FILE": settings.kafka_ssl_ca_file,
        "KAFKA_SSL_CERT_FILE": settings.kafka_ssl_cert_file,
        "KAFKA_SSL_KEY_FILE": settings.kafka_ssl_key_file,
    }
    given = [name for name, path in tls_files.items() if path is not None]
    if given and not settings.kafka_tls:
        problems.append(
            f"{', '.join(given)} set but KAFKA_SECURITY_PROTOCOL is "
            f"{settings.kafka_security_protocol}, which uses no TLS: set it to SASL_SSL or SSL"
        )
    if (settings.kafka_ssl_cert_file is None) != (settings.kafka_ssl_key_file is None):
        problems.append(
            "mutual TLS needs both KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE (set both, or "
            "neither)"
        )
    for name, path in tls_files.items():
        if path is not None and not path.is_file():
            problems.append(f"{name}={path} is not a readable file")
    if settings.embedded_kafka_security != "off" and settings.broker == "tansu":
        problems.append(
            "ITINERANT_EMBEDDED_KAFKA_SECURITY needs the embedded Apache Kafka; Tansu has no "
            "SASL or TLS: set ITINERANT_BROKER=kafka or ITINERANT_EMBEDDED_KAFKA_SECURITY=off"
        )
    return problems


def _slot(name: str, taken: set[int]) -> int:
    span = len(AGENT_PORT_SLOTS)
    start = zlib.crc32(name.encode()) % span
    for step in range(span):
        slot = AGENT_PORT_SLOTS[(start + step) % span]
        if slot not in taken:
            return slot
    raise ValueError(f"more than {span} agents: no metrics port slot left for {name!r}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
