"""The long run (`make soak`, about five minutes; not in `make test`): 500 sagas on the three-node
Apache Kafka cluster (RF 3, min.insync 2) with the state in PostgreSQL, while

- replicas are added to the running mesh (flights 1 -> 3 at +15 s; hotels and the coordinator
  1 -> 2 at +30 s, as `itinerant scale` does),
- a random process, replicas among them, is SIGKILLed every 3 s and restarted,
- inventory faults are injected, and
- one broker, the busiest, is SIGKILLed at +40 s and restarted 12 s later.

Afterwards, as in test_chaos.py: every saga settled (parked ones complete after a replay),
nothing was booked twice, every compensation released what its saga held, and every result on
the results topic agrees with the coordinator. The figures are printed; run with ``-s``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from itinerant.settings import replica_name

from .cluster import ClusterHandle, kafka_cluster
from .conftest import free_port_block, poll_until
from .test_chaos import FAULT_RATE, FLOW, ChaosPlan, run_chaos
from .test_cluster_faults import replicated_system
from .test_replicas import shared_by

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("ITINERANT_SOAK") != "1",
        reason="the five-minute soak runs with `make soak` (ITINERANT_SOAK=1)",
    ),
]

GROWN = {"flights": 3, "hotels": 2, "coordinator": 2}
PARTITIONS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    with kafka_cluster(tmp_path_factory.mktemp("soak-cluster")) as handle:
        yield handle


def test_500_sagas_while_replicas_are_added_and_a_broker_is_killed(
    cluster: ClusterHandle, tmp_path: Path, state_url: str
) -> None:
    with replicated_system(
        cluster,
        tmp_path / "system",
        fault_inventory_rate=FAULT_RATE,
        state_url=state_url,
        partitions=PARTITIONS,
        metrics_port_base=free_port_block(300),
    ) as system:
        supervisor = system.supervisor
        prefix = system.settings.topic_prefix
        victim = cluster.busiest_node(prefix)
        node = cluster.kafka.nodes[victim]
        background = ThreadPoolExecutor(max_workers=1)
        restarted: list[Future[None]] = []

        def kill_broker() -> None:
            node.kill()

        def restart_broker() -> None:
            restarted.append(background.submit(cluster.kafka.restart, victim, cluster.log_dir))

        plan = ChaosPlan(
            sagas=500,
            publish_s=75.0,
            kill_every_s=3.0,
            freeze_at_s=40.0,
            freeze_s=12.0,
            settle_timeout_s=240.0,
            victims=(
                *FLOW,
                *(replica_name(s, r) for s, n in GROWN.items() for r in range(2, n + 1)),
            ),
            events=(
                (15.0, lambda: supervisor.scale({"flights": 3})),
                (30.0, lambda: supervisor.scale({"hotels": 2, "coordinator": 2})),
            ),
        )
        run_chaos(
            system,
            freeze=kill_broker,
            thaw=restart_broker,
            target=f"kafka node {node.node_id} killed (not frozen) and restarted",
            plan=plan,
        )
        assert restarted, "the broker was never restarted"
        restarted[0].result()
        background.shutdown()
        for service, count in GROWN.items():
            assert poll_until(
                lambda s=service, c=count: shared_by(system, s, c),
                60,
                f"{count} members of {service}'s group after the run",
            )
        cluster.wait_fully_replicated(prefix, 60)
