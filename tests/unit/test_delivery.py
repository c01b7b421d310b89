"""No loss path between a record and its acknowledgement (runtime/delivery.py): a record whose
handling raises is retried, then dead-lettered as it came; outputs are delivered until the
broker takes them (an output it refuses for good: tests/unit/test_dlq_bounds.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from itinerant.errors import BrokerUnavailable
from itinerant.observability import metrics
from itinerant.runtime.delivery import deliver_until_done, handle_or_dead_letter
from itinerant.runtime.outcome import Processed
from itinerant.settings import Settings
from itinerant.wire.envelope import InRecord, OutMessage


@pytest.fixture
def fast(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, retry_base_delay_s=0.0, retry_max_delay_s=0.0)


RECORD = InRecord(
    "itinerant.agent.a", 2, 41, b"k", b'{"raw": true}', [("ce_id", b"m-1"), ("ce_sagaid", b"s-1")]
)


class FlakyHandler:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self, record: InRecord) -> Processed:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return Processed("ok")


async def test_a_record_whose_handling_raises_is_tried_again(fast: Settings) -> None:
    handler = FlakyHandler(fast.max_attempts - 1, sqlite3.OperationalError("database is locked"))
    processed = await handle_or_dead_letter(handler, RECORD, service="a", settings=fast)
    assert processed.outcome == "ok"
    assert handler.calls == fast.max_attempts


async def test_a_record_that_keeps_failing_is_dead_lettered_as_it_came(fast: Settings) -> None:
    handler = FlakyHandler(10**6, sqlite3.OperationalError("database or disk is full"))
    processed = await handle_or_dead_letter(handler, RECORD, service="a", settings=fast)
    assert handler.calls == fast.max_attempts
    assert processed.outcome == "dead_lettered" and processed.error is not None
    [letter] = processed.outputs
    assert letter.topic == fast.dlq_topic
    assert letter.value == RECORD.value and letter.key == RECORD.key  # the original, unchanged
    assert letter.header("x-dlq-reason") == b"retries_exhausted"
    assert b"disk is full" in (letter.header("x-dlq-error") or b"")
    assert letter.header("x-dlq-origin-offset") == b"41"
    assert letter.header("x-dlq-origin-partition") == b"2"


class FlakyBroker:
    """A deliver() that fails ``failures`` times, then records what it took."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.taken: list[OutMessage] = []
        self.marked: list[int] = []

    async def __call__(self, batch: Sequence[Processed]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise BrokerUnavailable("no broker answered")
        self.taken += [m for p in batch for m in p.outputs]
        self.marked += [seq for p in batch for seq in p.outbox_seqs]


def out(topic: str, size: int, ce_id: str) -> OutMessage:
    return OutMessage(topic, b"k", b"x" * size, [("ce_id", ce_id.encode()), ("x-big", b"h")])


def failures_counted(service: str) -> float:
    value = metrics.DELIVERY_FAILURES.labels(service)._value.get()
    assert isinstance(value, float)
    return value


async def test_outputs_are_sent_again_until_the_broker_takes_them(fast: Settings) -> None:
    broker = FlakyBroker(failures=3)
    batch = [Processed("ok", [out("t", 10, "a"), out("t", 10, "b")], [7, 8])]
    before = failures_counted("svc-retry")
    await deliver_until_done(broker, batch, service="svc-retry", settings=fast)
    assert [m.header("ce_id") for m in broker.taken] == [b"a", b"b"]
    assert broker.marked == [7, 8] and broker.calls == 4
    assert failures_counted("svc-retry") == before + 3
