"""Deterministic ids (docs/architecture.md#delivery-guarantees): re-processing yields the same
ids."""

from __future__ import annotations

import uuid

import pytest

from itinerant.wire.ids import branch_id, derived_id, name_id, new_id

PARENT = "3f2a0c1e-8b7d-4a7e-9f00-1234567890ab"


def test_derived_id_is_uuid5_of_parent_and_service_kind() -> None:
    expected = uuid.uuid5(uuid.UUID(PARENT), "flights:forward")
    assert derived_id(PARENT, "flights", "forward") == str(expected)
    assert derived_id(PARENT, "flights", "forward") == derived_id(PARENT, "flights", "forward")
    assert uuid.UUID(derived_id(PARENT, "flights", "forward")).version == 5


def test_derived_ids_differ_by_service_kind_and_parent() -> None:
    ids = {
        derived_id(PARENT, "flights", "forward"),
        derived_id(PARENT, "flights", "event:step_completed"),
        derived_id(PARENT, "hotels", "forward"),
        derived_id(PARENT, "coordinator", "dispatch"),
        derived_id(str(uuid.uuid4()), "flights", "forward"),
    }
    assert len(ids) == 5


@pytest.mark.parametrize("parent", ["request-42", "", "a/b/c", "not-a-uuid-at-all:7"])
def test_derived_id_accepts_non_uuid_parents(parent: str) -> None:
    first = derived_id(parent, "coordinator", "dispatch")
    assert first == derived_id(parent, "coordinator", "dispatch")
    assert uuid.UUID(first).version == 5
    assert first != derived_id(parent + "x", "coordinator", "dispatch")


def test_branch_id_is_deterministic_and_distinct_per_branch() -> None:
    assert branch_id(PARENT, 0) == str(uuid.uuid5(uuid.UUID(PARENT), "branch:0"))
    branches = [branch_id(PARENT, i) for i in range(4)]
    assert len(set(branches)) == 4
    assert branches == [branch_id(PARENT, i) for i in range(4)]
    assert branch_id("request-42", 1) == branch_id("request-42", 1)


def test_name_id_is_stable_for_the_same_parts() -> None:
    assert name_id("t", 0, 5) == name_id("t", 0, 5)
    assert len({name_id("t", 0, 5), name_id("t", 0, 6), name_id("t", 1, 5)}) == 3


def test_new_id_is_random_uuid4() -> None:
    a, b = new_id(), new_id()
    assert a != b
    assert uuid.UUID(a).version == 4
