"""The one place settings become a Kafka client's security: librdkafka properties for every
confluent-kafka client (producers, consumers, admin), credentials for faust/aiokafka, and kcat's
``-X`` properties. See docs/security.md#the-broker."""

from __future__ import annotations

import ssl
from typing import Any

import faust

from itinerant.settings import Settings


def client_security(settings: Settings) -> dict[str, Any]:
    """librdkafka properties for ``settings``' security protocol, SASL login and TLS files."""
    config: dict[str, Any] = {"security.protocol": settings.kafka_security_protocol.lower()}
    if settings.kafka_sasl:
        assert settings.kafka_sasl_username is not None  # checked by Settings
        assert settings.kafka_sasl_password is not None
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_tls:
        if settings.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
        if settings.kafka_ssl_cert_file is not None:
            config["ssl.certificate.location"] = str(settings.kafka_ssl_cert_file)
        if settings.kafka_ssl_key_file is not None:
            config["ssl.key.location"] = str(settings.kafka_ssl_key_file)
        if settings.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka_ssl_check_hostname else "none"
        )
    return config


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """``bootstrap.servers`` and the security properties, then ``extra`` (which wins)."""
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap_servers}
    config.update(client_security(settings))
    config.update(extra)
    return config


def quiet_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A short-lived client's config: quiet, quick to give up, secured as ``settings`` say."""
    from itinerant.brokers.connection import quiet_client_config

    config = quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s)
    config.update(client_security(settings))
    config.update(extra)
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context aiokafka connects with: the CA file (else the system's), the client
    certificate for mutual TLS, hostname checks as configured."""
    ca = str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if settings.kafka_ssl_cert_file is not None and settings.kafka_ssl_key_file is not None:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_cert_file),
            str(settings.kafka_ssl_key_file),
            password=password.get_secret_value() if password is not None else None,
        )
    if not settings.kafka_ssl_check_hostname:
        context.check_hostname = False
    return context


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """``broker_credentials`` of a faust App (None: PLAINTEXT)."""
    if settings.kafka_sasl:
        assert settings.kafka_sasl_username is not None
        assert settings.kafka_sasl_password is not None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context(settings) if settings.kafka_tls else None,
        )
    if settings.kafka_tls:
        return faust.SSLCredentials(ssl_context(settings))
    return None


def kcat_properties(settings: Settings) -> dict[str, str]:
    """kcat's ``-X`` properties (librdkafka's names) for ``settings``' security."""
    return {key: str(value) for key, value in client_security(settings).items()}
