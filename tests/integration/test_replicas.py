"""Replicas on one machine (`itinerant up --replicas`): two flights, two hotels and two
coordinators, each pair one consumer group splitting its topic's partitions, all their state in
one PostgreSQL database (a schema per service, shared by its replicas).

Every service runs exactly-once (ITINERANT_PROCESSING_GUARANTEE=exactly_once: each batch's
outputs and input offsets in one Kafka transaction). At-least-once replicas are test_scale's and
`make soak`'s second test.

The chaos of test_chaos.py runs on it: sagas published over time, inventory faults injected, a
random process (a replica too) SIGKILLed every few seconds and restarted, and one flights replica
frozen (SIGSTOP) for ten seconds, so its partitions move to the other one and its open
transaction is left behind. Afterwards every saga settled, no booking was made twice, every
compensation released what its saga held and the results agree with the coordinator, as with
one process per service; and each saga's result is on the results topic exactly once for a
read_committed reader.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from itinerant.brokers.connection import quiet_client_config
from itinerant.settings import replica_name

from .conftest import Broker, System, poll_until, start_system
from .failure_helpers import results_per_saga, uncommitted_count
from .test_chaos import FAULT_RATE, FLOW, ChaosPlan, run_chaos

pytestmark = pytest.mark.integration

REPLICAS = {"flights": 2, "hotels": 2, "coordinator": 2}
FROZEN = replica_name("flights", 2)
PLAN = ChaosPlan(
    sagas=100,
    publish_s=30.0,
    kill_every_s=3.0,
    freeze_at_s=10.0,
    settle_timeout_s=150.0,
    victims=(*FLOW, *(replica_name(s, 2) for s in REPLICAS)),
)


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the module's services, dropped after."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def system(
    broker: Broker, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    running = start_system(
        broker,
        tmp_path_factory.mktemp("replicas"),
        replicas=REPLICAS,
        state_url=database,
        partitions=4,
        fault_inventory_rate=FAULT_RATE,
        processing_guarantee="exactly_once" if broker.kind == "kafka" else "at_least_once",
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def group_shares(system: System, service: str) -> list[int]:
    """Partitions held by each member of the service's consumer group (Faust's app id)."""
    settings = system.settings
    admin = AdminClient(
        quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s)
    )
    group = f"itinerant-{service}"
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sorted(len(m.assignment.topic_partitions) for m in described.members)


def shared_by(system: System, service: str, members: int) -> list[int] | None:
    shares = group_shares(system, service)
    return shares if len(shares) == members and min(shares) > 0 else None


def test_every_replica_runs_and_takes_a_share_of_the_partitions(system: System) -> None:
    procs = system.supervisor.procs
    for service, count in REPLICAS.items():
        # four partitions per topic (the coordinator reads two topics): nobody idles
        shares = poll_until(
            lambda s=service, c=count: shared_by(system, s, c),
            60,
            f"{count} members of {service}'s group, each with partitions",
        )
        assert sum(shares) == 4 * (2 if service == "coordinator" else 1), shares
    for service, count in REPLICAS.items():
        names = [replica_name(service, r) for r in range(1, count + 1)]
        assert all(procs[n].alive() for n in names), {n: procs[n].alive() for n in names}
        ports = {system.settings.metrics_port(service, r) for r in range(1, count + 1)}
        assert len(ports) == count, f"{service}: replicas share a metrics port {ports}"
    # Their state is PostgreSQL's: no SQLite file was made for a replicated service.
    state = system.settings.data_dir / "state"
    assert not [p.name for p in state.glob("*.db") if p.stem in REPLICAS]


def test_chaos_across_replicas_loses_nothing_and_books_once(system: System) -> None:
    procs = system.supervisor.procs

    def freeze() -> None:
        pid = procs[FROZEN].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

    def thaw() -> None:
        pid = procs[FROZEN].pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    states = run_chaos(system, freeze=freeze, thaw=thaw, target=FROZEN, plan=PLAN)

    if system.settings.transactional:
        counts = results_per_saga(system.settings, set(states))
        twice = {saga: n for saga, n in counts.items() if n != 1}
        print(
            f"  exactly-once: {len(counts)} sagas with a result, {len(twice)} with more than "
            f"one; results-topic records (aborted and transaction markers included): "
            f"{uncommitted_count(system.settings, system.settings.results_topic)}"
        )
        assert set(counts) == set(states), sorted(set(states) - set(counts))[:10]
        assert not twice, sorted(twice.items())[:10]
