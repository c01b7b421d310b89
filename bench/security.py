"""The broker security of the bench's own Kafka clients: the same settings as the services'
(KAFKA_SECURITY_PROTOCOL, ...; docs/security.md#the-broker), read from the environment. The
brokers the bench starts itself are plaintext, so by default this is plaintext too."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from itinerant.brokers.client_security import client_security, faust_credentials
from itinerant.settings import Settings


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


def kafka_security() -> dict[str, Any]:
    """librdkafka properties to merge into a bench client's config."""
    return client_security(_settings())


def faust_broker_credentials() -> Any:
    """``broker_credentials`` of a bench faust App (None: plaintext)."""
    return faust_credentials(_settings())
