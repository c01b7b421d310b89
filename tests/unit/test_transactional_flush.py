"""The exactly-once flusher alone, with a producer that aborts or fences on cue: a group is
committed once with its next offsets, again after an abort, dropped when its records belong to
an earlier generation or a partition moved, and a fenced process stops without acknowledging."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from itinerant.errors import TransactionAborted, TransactionFenced
from itinerant.runtime.outcome import Processed
from itinerant.runtime.transactional_flush import TransactionalFlusher
from itinerant.runtime.transactions import Member
from itinerant.settings import Settings
from itinerant.wire.envelope import OutMessage

TOPIC = "t.agent.search"


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Message:
    topic: str
    partition: int
    offset: int


@dataclass
class Event:
    message: Message


@dataclass
class Consumer:
    generation: int = 3
    held: set[TP] = field(default_factory=lambda: {TP(TOPIC, 0), TP(TOPIC, 1)})

    def group_member(self) -> Member:
        return Member("itinerant-search", self.generation, "member-1")

    def assignment(self) -> set[TP]:
        return self.held


@dataclass
class Stream:
    acked: list[Event] = field(default_factory=list)

    async def ack(self, event: Event) -> None:
        self.acked.append(event)


@dataclass
class Producer:
    failures: list[Exception] = field(default_factory=list)
    commits: list[tuple[list[OutMessage], dict[tuple[str, int], int], int]] = field(
        default_factory=list
    )

    async def commit(
        self, messages: Sequence[OutMessage], offsets: Mapping[tuple[str, int], int], member: Member
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.commits.append((list(messages), dict(offsets), member.generation))


def out(n: int, topic: str = "t.agent.next") -> OutMessage:
    return OutMessage(topic, b"k", b"%d" % n, [])


def run(
    tmp_path: Path,
    records: list[tuple[int, int, int]],
    producer: Producer,
    consumer: Consumer | None = None,
) -> tuple[Stream, list[str]]:
    """Feed (partition, offset, generation) records, let the flusher settle, then stop it."""
    settings = Settings(data_dir=tmp_path, retry_base_delay_s=0.01)
    stream, fenced = Stream(), []
    consumer = consumer or Consumer()

    async def main() -> None:
        flusher = TransactionalFlusher(
            consumer=consumer,
            stream=stream,
            producer=producer,  # type: ignore[arg-type]
            settings=settings,
            service="search",
            on_fenced=lambda: fenced.append("stopped"),
        )
        for partition, offset, generation in records:
            processed = Processed("ok", [out(offset)])
            await flusher.add(Event(Message(TOPIC, partition, offset)), processed, generation)
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            if len(stream.acked) == len(records) or fenced:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        flusher.close()

    asyncio.run(main())
    return stream, fenced


def test_a_group_commits_its_outputs_with_the_next_offsets(tmp_path: Path) -> None:
    producer = Producer()

    stream, _ = run(tmp_path, [(0, 10, 3), (1, 4, 3), (0, 11, 3)], producer)

    # queued before the flusher ran: one group, one transaction, each partition's next offset
    assert [offsets for _, offsets, _ in producer.commits] == [{(TOPIC, 0): 12, (TOPIC, 1): 5}]
    assert sorted(m.value for messages, _, _ in producer.commits for m in messages) == [
        b"10",
        b"11",
        b"4",
    ]
    assert len(stream.acked) == 3


def test_an_aborted_transaction_is_committed_again(tmp_path: Path) -> None:
    producer = Producer(failures=[TransactionAborted("rebalancing")])

    stream, _ = run(tmp_path, [(0, 10, 3)], producer)

    assert [offsets for _, offsets, _ in producer.commits] == [{(TOPIC, 0): 11}]
    assert len(stream.acked) == 1


def test_records_of_an_earlier_generation_or_a_moved_partition_are_dropped(
    tmp_path: Path,
) -> None:
    producer = Producer()
    consumer = Consumer(generation=4, held={TP(TOPIC, 0)})

    run(tmp_path, [(0, 10, 3), (1, 4, 4), (0, 11, 4)], producer, consumer)

    # offset 10 came before the rebalance and partition 1 is gone: only 11 is this member's
    assert [(o, g) for _, o, g in producer.commits] == [({(TOPIC, 0): 12}, 4)]
    assert [m.value for m in producer.commits[0][0]] == [b"11"]


def test_a_fenced_process_stops_and_acknowledges_nothing(tmp_path: Path) -> None:
    producer = Producer(failures=[TransactionFenced("producer fenced")])

    stream, fenced = run(tmp_path, [(0, 10, 3)], producer)

    assert fenced == ["stopped"]
    assert stream.acked == []
    assert producer.commits == []
