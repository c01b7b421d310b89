"""The secured embedded Apache Kafka (ITINERANT_EMBEDDED_KAFKA_SECURITY=sasl_ssl), started once
for the module with the whole mesh by the real supervisor: strangers, wrong passwords and
plaintext clients are refused; ACLs keep results to the coordinator and the operators' decisions
to operators; a request still flows end to end through services that each log in as
themselves. See docs/security.md#the-broker."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from pydantic import SecretStr

from itinerant.brokers.broker_security import ADMIN, BrokerSecurity
from itinerant.brokers.client_security import client_config, client_security
from itinerant.brokers.connection import BrokerRefusedLogin, probe_broker, require_broker
from itinerant.brokers.kafka import kafka_available, kafka_home
from itinerant.cli.supervisor import Supervisor
from itinerant.settings import Settings

from .conftest import System, free_port, free_port_block
from .conftest import test_broker_choice as broker_choice

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        broker_choice() != "kafka" or kafka_available(kafka_home()) is not None,
        reason="needs the embedded Apache Kafka (`make install`)",
    ),
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    port = free_port_block(2)  # the broker, its controller on the next port
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        broker="kafka",
        embedded_kafka_security="sasl_ssl",
        topic_prefix=f"s{uuid.uuid4().hex[:8]}.",
        data_dir=tmp_path_factory.mktemp("secured"),
        partitions=2,
        metrics_port_base=free_port_block(100),
        coordinator_http_port=free_port(),
        gateway_port=free_port(),
    )
    supervisor = Supervisor(settings, start_broker=True)
    try:
        supervisor.start()
        supervisor.wait_ready(120)
    except BaseException:
        supervisor.stop()
        raise
    try:
        yield System(supervisor.settings, supervisor)
    finally:
        supervisor.stop()


def _security(system: System) -> BrokerSecurity:
    assert system.supervisor.security is not None
    return system.supervisor.security


def _as(system: System, principal: str) -> Settings:
    return _security(system).login(system.settings, principal)


def _produce(settings: Settings, topic: str, value: bytes) -> KafkaError | None:
    """Produce one record and wait for its delivery report: None, or the broker's error."""
    reports: list[KafkaError | None] = []
    producer = Producer(
        client_config(settings, **{"message.timeout.ms": 15_000, "enable.idempotence": False})
    )
    producer.produce(
        topic, key=b"acl-test", value=value, on_delivery=lambda e, _m: reports.append(e)
    )
    assert producer.flush(20) == 0, "no delivery report within 20 s"
    assert len(reports) == 1
    return reports[0]


def test_generated_files_are_private(secured: System) -> None:
    security = _security(secured)
    assert stat.S_IMODE(security.folder.stat().st_mode) == 0o700
    files = [security.ca_file, security.ca_key_file, security.keystore_file]
    files += [security.passwords_file, secured.settings.data_dir / "kafka" / "server.properties"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_wrong_password_is_refused_and_said_so(secured: System) -> None:
    wrong = _as(secured, "cli").model_copy(update={"kafka_sasl_password": SecretStr("nope")})
    answered, refusal = probe_broker(wrong.kafka_bootstrap_servers, 5.0, client_security(wrong))
    assert not answered
    assert refusal is not None and "auth" in refusal.lower()
    with pytest.raises(BrokerRefusedLogin):
        require_broker(wrong.kafka_bootstrap_servers, 5.0, client_security(wrong))


def test_an_unknown_user_and_a_client_without_credentials_are_refused(secured: System) -> None:
    stranger = _as(secured, "cli").model_copy(update={"kafka_sasl_username": "mallory"})
    assert not probe_broker(stranger.kafka_bootstrap_servers, 5.0, client_security(stranger))[0]
    tls_only = {"security.protocol": "ssl", "ssl.ca.location": str(_security(secured).ca_file)}
    assert not probe_broker(secured.settings.kafka_bootstrap_servers, 3.0, tls_only)[0]


def test_a_plaintext_client_cannot_talk_to_the_sasl_ssl_listener(secured: System) -> None:
    bootstrap = secured.settings.kafka_bootstrap_servers
    assert not probe_broker(bootstrap, 3.0, {"security.protocol": "plaintext"})[0]
    # The same listener answers a client with a login: the refusals above are the security's.
    assert probe_broker(bootstrap, 5.0, client_security(_as(secured, "cli")))[0]


def test_only_the_coordinator_writes_results(secured: System) -> None:
    results = secured.settings.results_topic
    refused = _produce(_as(secured, "flights"), results, b"{}")
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    refused = _produce(_as(secured, "gateway"), results, b"{}")
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _produce(_as(secured, "coordinator"), results, b"{}") is None


def test_only_operators_write_decisions(secured: System) -> None:
    decisions = secured.settings.dlq_actions_topic
    value = json.dumps({"acl_test": True}).encode()
    for principal in ("cli", "coordinator", "flights"):
        refused = _produce(_as(secured, principal), decisions, value)
        assert refused is not None, principal
        assert refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, principal
    assert _produce(_as(secured, secured.settings.operator), decisions, value) is None


def test_an_agent_writes_only_where_its_steps_go(secured: System) -> None:
    # The validator is no step's predecessor of the planner: it may not write the planner's topic.
    refused = _produce(_as(secured, "validator"), secured.settings.agent_topic("planner"), b"{}")
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_request_flows_end_to_end_through_the_secured_mesh(secured: System) -> None:
    as_cli = System(_as(secured, "cli"), secured.supervisor)
    saga_id = as_cli.publish("day-trip.json")
    result = as_cli.results({saga_id}, timeout_s=90)[saga_id]
    assert result["status"] == "completed", result


def test_each_service_logs_in_as_itself(secured: System, tmp_path: Path) -> None:
    env = {
        **secured.supervisor.settings.to_env(),
        **_security(secured).login_env("coordinator"),
    }
    assert env[Settings.env_name("kafka_sasl_username")] == "coordinator"
    assert secured.settings.kafka_sasl_username == ADMIN  # the supervisor itself: the admin


def test_itinerant_kcat_logs_in_with_the_settings(secured: System) -> None:
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (make test installs it with apt-get)")
    as_cli = _as(secured, "cli")
    assert _produce(_as(secured, "coordinator"), as_cli.results_topic, b"{}") is None
    env = {**os.environ, **as_cli.to_env()}
    # Read the results topic to its end (the saga of the end-to-end test, the ACL probes).
    read = ["-C", "-t", as_cli.results_topic, "-o", "beginning", "-e", "-q", "-f", "%k\\n"]
    listed = subprocess.run(
        [sys.executable, "-m", "itinerant.cli.main", "kcat", *read],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "acl-test" in listed.stdout.split()
    assert as_cli.kafka_sasl_password is not None
    assert as_cli.kafka_sasl_password.get_secret_value() not in listed.stdout + listed.stderr
    # kcat without the security properties is not let in.
    bare = subprocess.run(
        ["kcat", "-L", "-m", "3", "-b", as_cli.kafka_bootstrap_servers],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bare.returncode != 0
