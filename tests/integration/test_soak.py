"""The long runs (`make soak`, about five minutes; not in `make test`): 500 sagas on the three-node
Apache Kafka cluster (RF 3, min.insync 2) with the state in PostgreSQL, while

- replicas are added to the running mesh (flights 1 -> 3 at +20 s; hotels and the coordinator
  1 -> 2 at +40 s, as `itinerant scale` does),
- a random process, replicas among them, is SIGKILLed every 4 s and restarted,
- inventory faults are injected, and
- one broker, the busiest, is SIGKILLed at +60 s and restarted 12 s later,

the requests spread over 120 s, every service running exactly-once (Kafka transactions).

Afterwards, as in test_chaos.py: every saga settled (parked ones complete after a replay),
nothing was booked twice, every compensation released what its saga held, and every result on
the results topic agrees with the coordinator; and each saga's result is there once for a
read_committed reader. The figures are printed; run with ``-s``.

The module's second test is test_chaos.py's chaos with one node of the cluster frozen (SIGSTOP)
for 10 s, on two replicas each of flights, hotels and the coordinator in PostgreSQL.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from itinerant.settings import replica_name

from .cluster import ClusterHandle, kafka_cluster
from .conftest import free_port_block
from .failure_helpers import results_per_saga, soak_only
from .test_chaos import FAULT_RATE, FLOW, ChaosPlan, run_chaos
from .test_cluster_faults import replicated_system
from .test_replicas import group_shares

pytestmark = [pytest.mark.integration, soak_only]

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
        processing_guarantee="exactly_once",
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
            # Two cores run three brokers and a dozen services here: a node's log recovery
            # after a SIGKILL has taken over a minute.
            restarted.append(
                background.submit(cluster.kafka.restart, victim, cluster.log_dir, 180.0)
            )

        plan = ChaosPlan(
            sagas=500,
            publish_s=120.0,
            kill_every_s=4.0,
            freeze_at_s=60.0,
            freeze_s=12.0,
            settle_timeout_s=240.0,
            victims=(
                *FLOW,
                *(replica_name(s, r) for s, n in GROWN.items() for r in range(2, n + 1)),
            ),
            events=(
                (20.0, lambda: supervisor.scale({"flights": 3})),
                (40.0, lambda: supervisor.scale({"hotels": 2, "coordinator": 2})),
            ),
        )
        states = run_chaos(
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
            deadline = time.monotonic() + 90
            while not (len(shares := group_shares(system, service)) == count and min(shares) > 0):
                assert time.monotonic() < deadline, (
                    f"{service}'s group after the run: partitions per member {shares}, "
                    f"not {count} members each with some"
                )
                supervisor.supervise_once()
                time.sleep(0.5)
        cluster.wait_fully_replicated(prefix, 60)
        counts = results_per_saga(system.settings, set(states))
        twice = {saga: n for saga, n in counts.items() if n != 1}
        print(f"  exactly-once: {len(counts)} sagas with a result, {len(twice)} with more")
        assert not twice, sorted(twice.items())[:10]


# test_chaos on the cluster: 150 sagas over 40 s, the same kills every 4 s, fault rate, 10 s
# freeze (a node of the cluster) and checks, on two replicas of flights, hotels and the
# coordinator (one partition each), their state in PostgreSQL; the kills choose among the
# replicas too.
CHAOS_REPLICAS = {"flights": 2, "hotels": 2, "coordinator": 2}
CLUSTER_CHAOS = ChaosPlan(
    sagas=150,
    publish_s=40.0,
    freeze_at_s=15.0,
    settle_timeout_s=150.0,
    victims=(*FLOW, *(f"{service}-2" for service in CHAOS_REPLICAS)),
)


def test_chaos_with_a_frozen_node_of_the_cluster_loses_nothing_and_books_once(
    cluster: ClusterHandle, tmp_path: Path, state_url: str
) -> None:
    with replicated_system(
        cluster,
        tmp_path / "system",
        fault_inventory_rate=FAULT_RATE,
        replicas=CHAOS_REPLICAS,
        state_url=state_url,
    ) as system:
        prefix = system.settings.topic_prefix
        node = cluster.kafka.nodes[cluster.busiest_node(prefix)]
        led = cluster.leader_counts(prefix)[node.node_id]
        run_chaos(
            system,
            freeze=lambda: node.signal(signal.SIGSTOP),
            thaw=lambda: node.signal(signal.SIGCONT),
            target=f"kafka node {node.node_id} of 3 (leader of {led} partitions)",
            plan=CLUSTER_CHAOS,
        )
        # The thawed node rejoins every ISR.
        cluster.wait_fully_replicated(prefix, 60)
