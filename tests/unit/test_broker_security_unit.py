"""Broker security without a broker: settings validation, the client configs built from them
(librdkafka, faust/aiokafka, kcat), the generated files and the mesh's ACLs."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import faust
import pytest
from cryptography import x509
from pydantic import SecretStr, ValidationError

from itinerant.brokers.acls import Grant, mesh_grants, successors
from itinerant.brokers.broker_security import ADMIN, BrokerSecurity, local_login
from itinerant.brokers.client_security import (
    client_config,
    client_security,
    faust_credentials,
    kcat_properties,
    quiet_config,
)
from itinerant.cli.kcat import kcat_args, kcat_config_file
from itinerant.mesh import load_mesh
from itinerant.settings import Settings


def _sasl_ssl(tmp_path: Path, **extra: object) -> Settings:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    fields: dict[str, object] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_username": "flights",
        "kafka_sasl_password": SecretStr("s3cret"),
        "kafka_ssl_ca_file": ca,
        **extra,
    }
    return Settings.model_validate(fields)


# -- settings ------------------------------------------------------------------------------


def test_the_default_is_plaintext_and_needs_nothing() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert client_security(settings) == {"security.protocol": "plaintext"}
    assert faust_credentials(settings) is None


def test_env_names_follow_kafka_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("ITINERANT_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw")
    settings = Settings()
    assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
    assert settings.kafka_sasl_username == "alice"
    assert Settings.env_name("kafka_sasl_password") == "KAFKA_SASL_PASSWORD"
    assert Settings.env_name("broker") == "ITINERANT_BROKER"


def test_sasl_without_a_login_says_which_variables_to_set() -> None:
    with pytest.raises(ValidationError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        Settings(kafka_security_protocol="SASL_SSL")


def test_a_username_without_sasl_is_refused() -> None:
    with pytest.raises(ValidationError, match="set it to SASL_SSL"):
        Settings(kafka_sasl_username="alice")


def test_tls_files_need_a_tls_protocol_and_must_exist(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ValidationError, match="uses no TLS"):
        Settings(kafka_ssl_ca_file=ca)
    with pytest.raises(ValidationError, match="is not a readable file"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="both KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cert_file=ca)


def test_secure_embedded_needs_kafka_not_tansu() -> None:
    with pytest.raises(ValidationError, match="Tansu has no"):
        Settings(broker="tansu", embedded_kafka_security="sasl_ssl")


def test_a_local_secure_broker_fills_the_login_in_itself() -> None:
    Settings(kafka_security_protocol="SASL_SSL", embedded_kafka_security="sasl_ssl")


def test_to_env_hands_children_the_password(tmp_path: Path) -> None:
    settings = _sasl_ssl(tmp_path)
    env = settings.to_env()
    assert env["KAFKA_SASL_PASSWORD"] == "s3cret"
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["KAFKA_SSL_CHECK_HOSTNAME"] == "true"
    assert "s3cret" not in repr(settings)


# -- client configs ------------------------------------------------------------------------


def test_librdkafka_config_of_sasl_ssl(tmp_path: Path) -> None:
    settings = _sasl_ssl(tmp_path, kafka_sasl_mechanism="SCRAM-SHA-256")
    config = client_config(settings, **{"linger.ms": 1})
    assert config["bootstrap.servers"] == settings.kafka_bootstrap_servers
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    assert (config["sasl.username"], config["sasl.password"]) == ("flights", "s3cret")
    assert config["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert config["linger.ms"] == 1
    quiet = quiet_config(settings)
    assert quiet["sasl.username"] == "flights" and "error_cb" in quiet


def test_hostname_checks_can_be_turned_off_and_mtls_files_are_passed(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    settings = _sasl_ssl(
        tmp_path, kafka_ssl_check_hostname=False, kafka_ssl_cert_file=cert, kafka_ssl_key_file=key
    )
    config = client_security(settings)
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert config["ssl.certificate.location"] == str(cert)
    assert config["ssl.key.location"] == str(key)


def test_sasl_plaintext_has_no_tls_properties() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password=SecretStr("p"),
    )
    config = client_security(settings)
    assert config["sasl.mechanism"] == "PLAIN"
    assert not [k for k in config if k.startswith("ssl.")]


def test_faust_gets_sasl_credentials_with_a_tls_context(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path / "sec")
    security.ensure(["flights"])
    settings = security.login(Settings(), "flights")
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "flights"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.check_hostname


def test_faust_gets_ssl_credentials_for_tls_only(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path / "sec")
    security.ensure([])
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=security.ca_file)
    assert isinstance(faust_credentials(settings), faust.SSLCredentials)


def test_kcat_gets_the_password_in_a_private_file_not_on_its_command_line(
    tmp_path: Path,
) -> None:
    settings = _sasl_ssl(tmp_path)
    assert kcat_properties(settings)["sasl.password"] == "s3cret"
    with kcat_config_file(settings) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "sasl.password=s3cret" in path.read_text().splitlines()
        args = kcat_args(settings, ["-L"], path)
        assert args == ["-b", settings.kafka_bootstrap_servers, "-F", str(path), "-L"]
        assert not any("s3cret" in a for a in args)
    assert not path.exists()
    assert kcat_args(settings, ["-b", "x:1", "-F", "mine", "-L"], path) == [
        "-b",
        "x:1",
        "-F",
        "mine",
        "-L",
    ]


# -- generated files -----------------------------------------------------------------------


def test_generated_files_are_private_and_kept(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path / "broker-security")
    security.ensure(["coordinator"])
    assert stat.S_IMODE(security.folder.stat().st_mode) == 0o700
    for path in security.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    ca, password = security.ca_file.read_bytes(), security.password("coordinator")
    security.ensure(["coordinator", "flights"])
    assert security.ca_file.read_bytes() == ca
    assert security.password("coordinator") == password
    assert set(security.passwords()) == {ADMIN, "coordinator", "flights"}


def test_the_broker_certificate_names_loopback_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path / "sec", host="127.0.0.1")
    security.ensure([])
    ca = x509.load_pem_x509_certificate(security.ca_file.read_bytes())
    broker = x509.load_pem_x509_certificates(security.keystore_file.read_bytes())[0]
    broker.verify_directly_issued_by(ca)
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def test_broker_properties_secure_every_listener(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path / "sec")
    security.ensure(["cli"])
    props = security.broker_properties("127.0.0.1", 9092, 9093)
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["super.users"].startswith(f"User:{ADMIN};")
    args = security.scram_format_args()
    assert args.count("--add-scram") == 2
    assert f"SCRAM-SHA-512=[name=cli,password={security.password('cli')}]" in args


def test_local_login_uses_the_generated_password(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_kafka_security="sasl_ssl")
    assert local_login(settings, "operator") is settings  # nothing generated yet
    BrokerSecurity.for_settings(settings).ensure(["operator"])
    logged_in = local_login(settings, "operator")
    assert logged_in.kafka_sasl_username == "operator"
    assert logged_in.kafka_security_protocol == "SASL_SSL"
    explicit = Settings(
        data_dir=tmp_path,
        embedded_kafka_security="sasl_ssl",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="me",
        kafka_sasl_password=SecretStr("pw"),
    )
    assert local_login(explicit, "operator").kafka_sasl_username == "me"


# -- ACLs ----------------------------------------------------------------------------------


def _travel_grants(layout: str = "process-per-service") -> list[Grant]:
    mesh = load_mesh("services.mesh:mesh")
    return mesh_grants(
        mesh,
        topic_prefix="itinerant.",
        agents=[a.name for a in mesh.agents],
        operators=["operator"],
        layout=layout,
    )


def _writers(grants: list[Grant], topic: str) -> set[str]:
    return {
        g.principal
        for g in grants
        if g.operation == "write"
        and g.resource == "topic"
        and (g.name == topic or (g.prefixed and topic.startswith(g.name)))
    }


def test_only_the_coordinator_writes_results_and_only_operators_decisions() -> None:
    grants = _travel_grants()
    assert _writers(grants, "itinerant.results") == {"coordinator"}
    assert _writers(grants, "itinerant.dlq.actions") == {"operator"}


def test_every_service_writes_events_and_dead_letters() -> None:
    grants = _travel_grants()
    services = {"coordinator", "planner", "flights", "hotels", "validator", "notifier"}
    assert services <= _writers(grants, "itinerant.saga.events")
    assert services <= _writers(grants, "itinerant.dlq")


def test_an_agent_reads_its_own_topic_and_group_and_writes_where_its_steps_go() -> None:
    grants = _travel_grants()
    mine = {(g.resource, g.name, g.operation) for g in grants if g.principal == "flights"}
    assert ("topic", "itinerant.agent.flights", "read") in mine
    assert ("group", "itinerant-flights", "read") in mine
    reads = {n for r, n, op in mine if op == "read" and r == "topic"}
    assert reads == {"itinerant.agent.flights"}
    mesh = load_mesh("services.mesh:mesh")
    assert _writers(grants, "itinerant.agent.hotels") >= {"coordinator", "planner"}
    for agent in ("planner", "flights", "hotels", "validator", "notifier"):
        for target in {a.name for a in mesh.agents} - successors(mesh, agent):
            assert agent not in _writers(grants, f"itinerant.agent.{target}"), (agent, target)


def test_the_shared_agents_process_gets_the_union() -> None:
    grants = _travel_grants("shared")
    principals = {g.principal for g in grants}
    assert "agents" in principals and "flights" not in principals
    assert "agents" in _writers(grants, "itinerant.agent.hotels")
