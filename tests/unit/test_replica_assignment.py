"""Replicas of one service share its partitions: after members leave and rejoin, every member
of the group gets at least one (docs/operations.md, "Replicas")."""

from __future__ import annotations

from pathlib import Path

from faust.assignor.client_assignment import CopartitionedAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor

from itinerant.runtime.store import Store
from itinerant.runtime.worker import Worker
from itinerant.settings import Settings


def rebalanced(replicas: int, earlier: dict[str, set[int]], partitions: int) -> dict[str, int]:
    """What Faust's sticky assignor gives each member, starting from ``earlier``."""
    members = {
        member: CopartitionedAssignment(actives=set(held), standbys=set(), topics={"topic"})
        for member, held in earlier.items()
    }
    assignor = CopartitionedAssignor(
        topics=["topic"], cluster_asgn=members, num_partitions=partitions, replicas=replicas
    )
    return {member: len(a.actives) for member, a in assignor.get_assignment().items()}


def test_a_rejoined_replica_is_given_partitions(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, partitions=4)
    worker = Worker("svc", settings, Store(tmp_path / "svc.db", ()), [])
    app = worker.build_app()
    # What the soak run left: one member rejoined while the other two kept two partitions each.
    earlier = {"first": set[int](), "second": {0, 1}, "third": {2, 3}}

    counts = rebalanced(app.assignor.replicas, earlier, settings.partitions)

    assert sorted(counts.values()) == [1, 1, 2]


def test_faust_default_standbys_would_leave_it_idle() -> None:
    """The reason for the setting: with one standby the same start leaves a member idle."""
    earlier = {"first": set[int](), "second": {0, 1}, "third": {2, 3}}

    assert sorted(rebalanced(1, earlier, 4).values()) == [0, 2, 2]
