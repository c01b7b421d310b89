"""Deterministic ids: re-processing a message yields the same ids, so the next hop drops repeats."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1c1f4e-6a52-4a1b-9b43-5f1f0c3a7e21")


def _as_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.uuid5(_NAMESPACE, value)


def derived_id(parent_id: str, service: str, kind: str) -> str:
    """``uuid5(parent, "<service>:<kind>")`` (docs/architecture.md#delivery-guarantees)."""
    return str(uuid.uuid5(_as_uuid(parent_id), f"{service}:{kind}"))


def branch_id(parent_id: str, index: int) -> str:
    """Id of branch ``index`` of a parallel group fanned out from ``parent_id``
    (docs/wire-contract.md#the-routing-slip)."""
    return str(uuid.uuid5(_as_uuid(parent_id), f"branch:{index}"))


def name_id(*parts: object) -> str:
    """A stable id from any parts (e.g. topic/partition/offset of a header-less request)."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def new_id() -> str:
    return str(uuid.uuid4())
