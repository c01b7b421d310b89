"""Per-principal ACLs for a secured broker, from the mesh: each service reads its own topic and
consumer group and writes only where its steps send; only the coordinator writes results; only
operators write the operators' decisions topic (``dlq.actions``). See docs/security.md#acls.

:func:`mesh_grants` computes them (no I/O); :func:`apply_grants` creates them with the admin
client. Every principal may also *describe* the mesh's topics (metadata and offsets, which the
workers' topic checks and lag monitors read), never read or write them beyond its grants.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from itinerant.errors import NonRetryableError
from itinerant.mesh import Mesh
from itinerant.wire.slip import Approval, Step, branches_of

#: The principal of ``itinerant`` commands that only publish requests and read what comes back.
CLI = "cli"
GATEWAY = "gateway"
#: The shared agents process (ITINERANT_LAYOUT=shared) connects as this principal.
SHARED_AGENTS = "agents"

Resource = Literal["topic", "group", "cluster"]
Operation = Literal["read", "write", "describe"]


class AclError(NonRetryableError):
    """The broker refused to create the mesh's ACLs."""

    reason = "acl_error"


@dataclass(frozen=True, order=True)
class Grant:
    """``principal`` may ``operation`` the ``resource`` called ``name`` (or prefixed by it)."""

    principal: str
    resource: Resource
    name: str
    operation: Operation
    prefixed: bool = False


def successors(mesh: Mesh, agent: str) -> set[str]:
    """The agents ``agent``'s outputs go to, by the mesh's flows: the next step's agents after
    each step of ``agent``; for the entry agent (which picks a flow) every flow's first step
    too. A parallel group's branches go back to the coordinator (which joins them), as does a
    step before an approval gate (the gate sits on the saga events topic)."""
    found: set[str] = set()

    def after(step: Any) -> list[str]:
        return [] if isinstance(step, Approval) else [s.agent for s in branches_of(step)]

    for flow in mesh.flows:
        steps = list(flow.steps)
        if mesh.entry.agent == agent and steps:
            found.update(after(steps[0]))
        for index, step in enumerate(steps[:-1]):
            if isinstance(step, Step) and step.agent == agent:
                found.update(after(steps[index + 1]))
    return found


def mesh_grants(
    mesh: Mesh,
    *,
    topic_prefix: str,
    agents: list[str],
    operators: Iterable[str],
    layout: str = "process-per-service",
) -> list[Grant]:
    """Every ACL of a mesh running ``agents``, by principal (sorted, no duplicates)."""

    def topic(name: str) -> str:
        return f"{topic_prefix}{name}"

    requests, results, events = topic("requests"), topic("results"), topic("saga.events")
    dlq, decisions = topic("dlq"), topic("dlq.actions")
    grants: set[Grant] = set()

    def allow(
        principal: str, resource: Resource, name: str, op: Operation, *, prefixed: bool = False
    ) -> None:
        grants.add(Grant(principal, resource, name, op, prefixed))

    def agent_grants(principal: str, agent: str) -> None:
        allow(principal, "topic", topic(f"agent.{agent}"), "read")
        allow(principal, "group", f"itinerant-{principal}", "read")
        for out in (events, dlq, *(topic(f"agent.{a}") for a in sorted(successors(mesh, agent)))):
            allow(principal, "topic", out, "write")

    operator_names = sorted(set(operators))
    principals = ["coordinator", GATEWAY, CLI, *operator_names]
    principals += [SHARED_AGENTS] if layout == "shared" else list(agents)
    for principal in principals:
        allow(principal, "topic", topic_prefix, "describe", prefixed=True)

    # The coordinator: ingress and saga events in; dispatch, results and dead letters out.
    for name in (requests, events):
        allow("coordinator", "topic", name, "read")
    for name in (results, events, dlq, *(topic(f"agent.{a}") for a in agents)):
        allow("coordinator", "topic", name, "write")
    allow("coordinator", "group", "itinerant-coordinator", "read")
    allow("coordinator", "cluster", "kafka-cluster", "describe")  # broker storage (lag monitor)

    for agent in agents:
        agent_grants(SHARED_AGENTS if layout == "shared" else agent, agent)

    # The gateway: publishes requests and its callers' cancels; follows results and events.
    allow(GATEWAY, "topic", requests, "write")
    allow(GATEWAY, "topic", events, "write")
    for name in (results, events):
        allow(GATEWAY, "topic", name, "read")

    # The CLI's own principal: publish requests, read what the mesh answers and dead-letters.
    allow(CLI, "topic", requests, "write")
    for name in (results, events, dlq, decisions):
        allow(CLI, "topic", name, "read")
    allow(CLI, "group", "itinerant-cli", "read", prefixed=True)

    # Operators: read everything; approvals and discards (saga events), replays (any agent
    # topic, requests), and the only writers of the decisions topic.
    for operator in operator_names:
        allow(operator, "topic", topic_prefix, "read", prefixed=True)
        for name in (requests, events, decisions):
            allow(operator, "topic", name, "write")
        allow(operator, "topic", topic("agent."), "write", prefixed=True)
        allow(operator, "group", "itinerant-cli", "read", prefixed=True)
    return sorted(grants)


def service_principal(service: str) -> str:
    """The broker principal a service process (``itinerant worker <service>``) connects as."""
    return service


_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "cluster": ResourceType.BROKER,
}
_OPERATION = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "describe": AclOperation.DESCRIBE,
}


def binding(grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCE[grant.resource],
        grant.name,
        ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
        f"User:{grant.principal}",
        "*",
        _OPERATION[grant.operation],
        AclPermissionType.ALLOW,
    )


def apply_grants(admin: AdminClient, grants: list[Grant], timeout_s: float) -> None:
    """Create ``grants`` (creating an ACL that exists is a no-op)."""
    if not grants:
        return
    futures = admin.create_acls([binding(g) for g in grants], request_timeout=timeout_s)
    failed = []
    for acl, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            failed.append(f"{acl}: {exc}")
    if failed:
        raise AclError(
            f"the broker refused {len(failed)} ACL(s): {'; '.join(failed[:3])}",
            hint="the admin principal must be a super user of the broker (super.users)",
        )
