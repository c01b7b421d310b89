"""Securing a running embedded broker for a mesh: every principal's SCRAM user (upserted, so a
principal added after the storage was formatted gets one too) and the mesh's ACLs
(docs/security.md#the-broker)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from itinerant.brokers.acls import CLI, GATEWAY, SHARED_AGENTS, AclError, apply_grants, mesh_grants
from itinerant.brokers.broker_security import ADMIN, BrokerSecurity
from itinerant.brokers.client_security import quiet_config
from itinerant.mesh import Mesh
from itinerant.settings import Settings

log = logging.getLogger(__name__)

_ITERATIONS = 8192


def broker_principals(settings: Settings) -> list[str]:
    """Every principal with a broker login: the services, the gateway, the CLI, operators."""
    from itinerant.security.local import mesh_principals

    names = [*mesh_principals(settings), SHARED_AGENTS, CLI, GATEWAY]
    return [n for n in dict.fromkeys(names) if n != ADMIN]


def secure_mesh(settings: Settings, security: BrokerSecurity, mesh: Mesh) -> None:
    """Upsert every principal's SCRAM credential and create the mesh's ACLs, as the admin."""
    admin_settings = security.login(settings, ADMIN)
    admin = AdminClient(quiet_config(admin_settings))
    passwords = security.passwords()
    upserts = [
        UserScramCredentialUpsertion(
            name,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _ITERATIONS),
            passwords[name].encode(),
        )
        for name in broker_principals(settings)
        if name in passwords
    ]
    timeout = settings.broker_timeout_s
    futures = admin.alter_user_scram_credentials(upserts, request_timeout=timeout)
    for user, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise AclError(f"the broker refused the SCRAM user {user!r}: {exc}") from exc
    grants = mesh_grants(
        mesh,
        topic_prefix=settings.topic_prefix,
        agents=settings.agents,
        operators=[*settings.operators, settings.operator],
        layout=settings.layout,
    )
    apply_grants(admin, grants, timeout)
    log.info("broker secured: %d SCRAM users, %d ACLs", len(upserts), len(grants))
