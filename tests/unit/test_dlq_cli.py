"""The operator's DLQ tooling without a broker: folding, filters, ids, refusals, exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from itinerant.cli import dlq as cli
from itinerant.errors import ItinerantError, SchemaViolation, UnsupportedVersion
from itinerant.operators import dlq_actions as da
from itinerant.runtime.dlq import dead_letter
from itinerant.security.keys import ensure_local_keys
from itinerant.wire.envelope import REPLAY_COUNT, Envelope, InRecord, OutMessage

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SAGA = "5b0a4c3e-0000-4000-8000-000000000001"


def poison(
    *,
    ce_id: str = "m-1",
    saga: str = SAGA,
    offset: int = 7,
    topic: str = "itinerant.agent.flights",
    replay_count: int = 0,
    reason_error: ItinerantError | None = None,
    dlq_offset: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
    at: datetime | None = None,
) -> da.DlqEntry:
    """A dead letter exactly as the runtime writes it."""
    if headers is None:
        envelope = Envelope(
            id=ce_id,
            type="itinerant.flights.book.v9",
            source="/clients/test",
            saga_id=saga,
            data=b'{"request": 42}',
            replay_count=replay_count,
        )
        headers = envelope.headers()
        key: bytes | None = saga.encode()
    else:
        key = None
    record = InRecord(topic, 1, offset, key, b'{"request": 42}', headers)
    error = reason_error or UnsupportedVersion("flights.book accepts versions [1], got v9")
    out = dead_letter(
        record,
        error,
        service="flights",
        dlq_topic="itinerant.dlq",
        attempts=1,
        saga_id=saga,
        max_bytes=1_000_000,
    )
    if at is not None:
        out = OutMessage(
            out.topic,
            out.key,
            out.value,
            [(k, at.isoformat().encode() if k == "x-dlq-at" else v) for k, v in out.headers],
        )
    return da.DlqEntry.from_record(
        InRecord(out.topic, 0, dlq_offset, out.key, out.value, out.headers)
    )


def replayed(entry: str, count: int = 1, at: datetime = NOW, by: str = "ana") -> da.Action:
    return da.Action(entry=entry, action="replayed", at=at, by=by, replay_count=count)


def discarded(entry: str, at: datetime = NOW) -> da.Action:
    return da.Action(entry=entry, action="discarded", at=at, by="bo", why="customer gave up")


# --- entries and ids ------------------------------------------------------------------------


def test_entry_reads_the_runtime_headers() -> None:
    entry = poison()
    assert entry.reason == "unsupported_version"
    assert entry.error_type == "UnsupportedVersion"
    assert "v9" in entry.error
    assert entry.service == "flights"
    assert entry.origin == "itinerant.agent.flights[1]@7"
    assert entry.attempts == 1
    assert entry.ce_id == "m-1" and entry.saga_id == SAGA
    assert entry.ce_type == "itinerant.flights.book.v9"
    assert entry.replay_count == 0
    assert entry.at is not None and entry.at.tzinfo is not None


def test_entry_id_is_stable_short_and_depends_on_origin_and_message() -> None:
    first = poison()
    assert first.id == poison(dlq_offset=99).id  # where it sits in the dlq does not matter
    assert len(first.id) == 12 and int(first.id, 16) >= 0
    assert first.id == da.entry_id("itinerant.agent.flights", 1, 7, "m-1")
    assert poison(offset=8).id != first.id
    assert poison(ce_id="m-2").id != first.id
    assert poison(topic="itinerant.agent.hotels").id != first.id


def test_entry_without_origin_position_is_told_apart_by_time() -> None:
    a = poison(offset=-1, at=NOW)
    b = poison(offset=-1, at=NOW + timedelta(seconds=1))
    assert a.id != b.id


def test_headerless_request_uses_the_key_as_saga() -> None:
    entry = poison(headers=[], topic="itinerant.requests")
    assert entry.ce_id is None and not entry.has_cloudevent
    assert entry.saga_id == SAGA  # dead_letter keys it by the saga id


# --- folding and the view -------------------------------------------------------------------


def test_fold_attaches_actions_and_status() -> None:
    a, b, c = poison(offset=1, ce_id="a"), poison(offset=2, ce_id="b"), poison(offset=3, ce_id="c")
    views = {
        v.id: v
        for v in da.fold(
            [a, b, c],
            [
                replayed(a.id, 1, NOW),
                replayed(a.id, 2, NOW + timedelta(minutes=1)),
                discarded(c.id),
                da.Action("ffffffffffff", "replayed", NOW, "x"),  # of an entry we do not have
            ],
        )
    }
    assert views[a.id].status == "replayed" and views[a.id].replays == 2
    assert views[a.id].describe_status() == "replayed 2x"
    assert views[b.id].status == "pending" and views[b.id].describe_status() == "pending"
    assert views[c.id].status == "discarded"


def test_fold_deduplicates_and_links_later_failures_of_the_same_message() -> None:
    first = poison(offset=1, at=NOW)
    again = poison(offset=5, replay_count=1, at=NOW + timedelta(minutes=2), dlq_offset=3)
    views = da.fold([again, first, first], [replayed(first.id)])
    assert [v.id for v in views] == [first.id, again.id]  # oldest first, the repeat once
    assert views[0].later == (again.id,)
    assert f"failed again (latest: {again.id})" in views[0].describe_status()
    assert views[1].later == () and views[1].status == "pending"


def test_as_dict_is_json_for_scripts() -> None:
    entry = poison(at=NOW - timedelta(minutes=5))
    row = da.fold([entry], [replayed(entry.id)])[0].as_dict(NOW)
    assert json.loads(json.dumps(row)) == row
    assert row["id"] == entry.id and row["status"] == "replayed" and row["replays"] == 1
    assert row["age_s"] == 300.0
    assert row["origin_topic"] == "itinerant.agent.flights" and row["origin_offset"] == 7
    assert row["actions"][0]["by"] == "ana"


# --- filters and --since --------------------------------------------------------------------


def test_filters() -> None:
    old = poison(offset=1, ce_id="a", at=NOW - timedelta(hours=3))
    new = poison(
        offset=2,
        ce_id="b",
        saga="other-saga",
        at=NOW - timedelta(minutes=1),
        reason_error=SchemaViolation("bad shape"),
    )
    views = da.fold([old, new], [replayed(old.id)])

    def ids(rows: list[da.EntryView]) -> list[str]:
        return [r.id for r in rows]

    assert ids(da.filter_views(views, reason="schema_violation")) == [new.id]
    assert ids(da.filter_views(views, service="flights")) == [old.id, new.id]
    assert ids(da.filter_views(views, service="hotels")) == []
    assert ids(da.filter_views(views, saga="other")) == [new.id]  # a prefix will do
    assert ids(da.filter_views(views, since=NOW - timedelta(hours=1))) == [new.id]
    assert ids(da.filter_views(views, status="replayed")) == [old.id]
    assert ids(da.filter_views(views, reason="schema_violation", saga=SAGA)) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", NOW - timedelta(minutes=10)),
        ("2h", NOW - timedelta(hours=2)),
        ("1.5d", NOW - timedelta(hours=36)),
        ("30s", NOW - timedelta(seconds=30)),
        ("2024-04-30T08:00:00+02:00", datetime(2024, 4, 30, 6, 0, tzinfo=UTC)),
        ("2024-04-30T08:00", datetime(2024, 4, 30, 8, 0, tzinfo=UTC)),  # naive = UTC
        ("2024-04-30", datetime(2024, 4, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert da.parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "-5m", "yesterday"])
def test_parse_since_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="10m"):
        da.parse_since(text, NOW)


# --- ids ------------------------------------------------------------------------------------


def _views_with_ids(*ids: str) -> list[da.EntryView]:
    base = poison()
    return [da.EntryView(entry=_with_id(base, i)) for i in ids]


def _with_id(entry: da.DlqEntry, ident: str) -> da.DlqEntry:
    from dataclasses import replace

    return replace(entry, id=ident)


def test_resolve_accepts_any_unique_prefix() -> None:
    views = _views_with_ids("abc123456789", "abd000000000", "ff0000000000")
    assert da.resolve(views, "abc").id == "abc123456789"
    assert da.resolve(views, "ABD").id == "abd000000000"  # case does not matter
    assert da.resolve(views, "f").id == "ff0000000000"
    assert da.resolve(views, "abc123456789").id == "abc123456789"


def test_resolve_unknown_and_ambiguous() -> None:
    views = _views_with_ids("abc123456789", "abd000000000")
    with pytest.raises(da.UnknownEntry, match="dlq list"):
        da.resolve(views, "0")
    with pytest.raises(da.UnknownEntry):
        da.resolve(views, "  ")
    with pytest.raises(da.AmbiguousEntry, match="more characters") as info:
        da.resolve(views, "ab")
    assert info.value.candidates == ["abc123456789", "abd000000000"]


# --- refusals -------------------------------------------------------------------------------


def test_refusal_rules() -> None:
    entry = poison()
    pending = da.fold([entry], [])[0]
    once = da.fold([entry], [replayed(entry.id)])[0]
    gone = da.fold([entry], [replayed(entry.id), discarded(entry.id)])[0]
    assert da.replay_refusal(pending) is None
    assert da.discard_refusal(pending) is None
    refusal = da.replay_refusal(once)
    assert refusal is not None and "already replayed 1x" in refusal and "--force" in refusal
    assert "ana" in refusal
    assert da.discard_refusal(once) is None  # a replayed saga may still be given up
    refusal = da.replay_refusal(gone)
    assert refusal is not None and "discarded" in refusal and "--force" in refusal
    refusal = da.discard_refusal(gone)
    assert refusal is not None and "already discarded" in refusal
    assert gone.describe_status() == "discarded (after 1 replay)"


def test_bulk_selection_skips_handled_and_superseded_entries() -> None:
    first = poison(offset=1, at=NOW)
    again = poison(offset=9, replay_count=1, at=NOW + timedelta(minutes=1))
    other = poison(offset=2, ce_id="other", at=NOW)
    done = poison(offset=3, ce_id="done", at=NOW)
    views = da.fold([first, again, other, done], [replayed(first.id), replayed(done.id)])
    chosen, refused = da.select_for_replay(views, force=False)
    assert {v.id for v in chosen} == {again.id, other.id}
    reasons = {v.id: why for v, why in refused}
    assert "superseded by " + again.id in reasons[first.id]
    assert "--force" in reasons[done.id]
    chosen, refused = da.select_for_replay(views, force=True)
    assert {v.id for v in chosen} == {again.id, other.id, done.id}
    assert [v.id for v, _ in refused] == [first.id]  # never the same message twice at once


# --- what a replay publishes ----------------------------------------------------------------


def test_replay_message_restores_the_original() -> None:
    entry = poison()
    message = da.replay_message(da.fold([entry], [])[0])
    assert message.topic == "itinerant.agent.flights"
    assert message.key == SAGA.encode()
    assert message.value == b'{"request": 42}'
    assert not [k for k, _ in message.headers if k.startswith("x-dlq-")]
    assert message.header("ce_id") == b"m-1"
    assert message.header(REPLAY_COUNT) == b"1"
    assert [k for k, _ in message.headers].count(REPLAY_COUNT) == 1
    original = {k: v for k, v in entry.headers if not k.startswith("x-dlq-")}
    assert {k: v for k, v in message.headers if k != REPLAY_COUNT} == original
    decoded = Envelope.from_record(InRecord("t", 0, 0, message.key, message.value, message.headers))
    assert decoded.id == "m-1" and decoded.replay_count == 1


def test_replay_count_counts_earlier_replays() -> None:
    entry = poison(replay_count=2)  # it had been replayed twice before it failed here
    assert da.replay_message(da.fold([entry], [])[0]).header(REPLAY_COUNT) == b"3"
    forced = da.fold([entry], [replayed(entry.id, count=3)])[0]
    assert da.replay_message(forced).header(REPLAY_COUNT) == b"4"
    fresh = poison(offset=4)
    again = da.fold([fresh], [replayed(fresh.id, count=1)])[0]
    assert da.next_replay_count(again) == 2


def test_headerless_request_is_replayed_as_it_was() -> None:
    saga_only = [("ce_sagaid", SAGA.encode())]
    entry = poison(headers=saga_only, topic="itinerant.requests")
    message = da.replay_message(da.fold([entry], [])[0])
    assert message.topic == "itinerant.requests"
    assert message.headers == saga_only
    assert message.value == entry.value


def test_action_round_trip_and_garbage() -> None:
    action = da.Action("abc123456789", "discarded", NOW, "bo", "why not", None)
    assert da.Action.from_json(action.to_json()) == action
    message = action.to_message("itinerant.dlq.actions")
    assert message.key == b"abc123456789"
    assert json.loads(message.value) == {
        "entry": "abc123456789",
        "action": "discarded",
        "at": NOW.isoformat(),
        "by": "bo",
        "why": "why not",
        "replay_count": None,
    }
    for raw in (None, b"", b"nope", b"[]", b'{"entry": "x", "action": "eaten", "at": "2024"}'):
        assert da.Action.from_json(raw) is None


def test_discard_event() -> None:
    entry = poison()
    view = da.fold([entry], [])[0]
    message = da.discard_event(view, topic="itinerant.saga.events", why="no", by="bo", now=NOW)
    assert message.topic == "itinerant.saga.events" and message.key == SAGA.encode()
    envelope = Envelope.from_record(
        InRecord("t", 0, 0, message.key, message.value, message.headers)
    )
    assert envelope.type == "itinerant.saga.discard_requested.v1"
    assert envelope.saga_id == SAGA and envelope.causation_id == "m-1"
    assert json.loads(envelope.data) == {
        "saga_id": SAGA,
        "why": "no",
        "entry": entry.id,
        "by": "bo",
    }


# --- the commands, with the broker replaced -------------------------------------------------


class FakeKafka:
    def __init__(self, entries: list[da.DlqEntry], actions: list[da.Action]) -> None:
        self.entries = entries
        self.actions = actions
        self.sent: list[OutMessage] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def snapshot(_settings: Any, **_: Any) -> cli.Snapshot:
            return cli.Snapshot(list(self.entries), list(self.actions))

        def publish(_settings: Any, messages: list[OutMessage]) -> list[str | None]:
            self.sent.extend(messages)
            for message in messages:
                if message.topic.endswith("dlq.actions"):
                    action = da.Action.from_json(message.value)
                    assert action is not None
                    self.actions.append(action)
            return [None] * len(messages)

        monkeypatch.setattr(cli, "read_snapshot", snapshot)
        monkeypatch.setattr(cli, "publish", publish)
        monkeypatch.setattr(cli, "_ensure_actions_topic", lambda _settings: None)
        monkeypatch.setenv("ITINERANT_COORDINATOR_HTTP_PORT", "1")  # nothing answers there


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.dlq_app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> FakeKafka:
    fake = FakeKafka(
        [poison(offset=1, ce_id="a"), poison(offset=2, ce_id="b", saga="saga-two")], []
    )
    fake.install(monkeypatch)
    return fake


def test_cli_list_json(kafka: FakeKafka) -> None:
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["status"] for r in rows] == ["pending", "pending"]
    result = run("list", "--json", "--saga", "saga-two")
    assert [r["saga_id"] for r in json.loads(result.stdout)] == ["saga-two"]


def test_cli_list_table(kafka: FakeKafka) -> None:
    result = run("list")
    assert result.exit_code == 0
    assert kafka.entries[0].id in result.stdout and "unsupported_version" in result.stdout


def test_cli_usage_errors_exit_2(kafka: FakeKafka) -> None:
    assert run("replay").exit_code == 2
    assert run("replay", "abc", "--all").exit_code == 2
    assert run("list", "--since", "soon").exit_code == 2
    assert run("list", "--status", "lost").exit_code == 2
    assert run("show", "zzzz").exit_code == 2
    assert run("discard", kafka.entries[0].id, "--why", " ").exit_code == 2
    assert run("discard", kafka.entries[0].id).exit_code == 2  # --why is required


def test_cli_replay_then_refuse_then_force(kafka: FakeKafka) -> None:
    target = kafka.entries[0].id
    dry = run("replay", target[:6], "--dry-run")
    assert dry.exit_code == 0 and "would replay" in dry.stdout and not kafka.sent
    first = run("replay", target[:6])
    assert first.exit_code == 0, first.output
    replay, record = kafka.sent
    assert replay.topic == "itinerant.agent.flights" and replay.header(REPLAY_COUNT) == b"1"
    assert record.key == target.encode()
    refused = run("replay", target)
    assert refused.exit_code == 3 and "--force" in refused.stderr
    forced = run("replay", target, "--force")
    assert forced.exit_code == 0
    assert kafka.sent[2].header(REPLAY_COUNT) == b"2"
    assert run("list", "--json").stdout.count('"replayed"') >= 1


def test_cli_bulk_replay_exit_3_only_when_everything_is_refused(kafka: FakeKafka) -> None:
    assert run("replay", "--reason", "nothing_like_it").exit_code == 0
    assert run("replay", "--all").exit_code == 0
    assert len(kafka.sent) == 4  # two replays and their two records
    again = run("replay", "--all")
    assert again.exit_code == 3 and "skipped" in again.stderr


def test_cli_discard(kafka: FakeKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITINERANT_DATA_DIR", str(tmp_path))
    target = kafka.entries[1]
    refused = run("discard", target.id, "--why", "customer cancelled")
    assert refused.exit_code == 1 and "no signing key" in refused.stderr  # says what to do
    ensure_local_keys(tmp_path / "keys", ["operator"])
    result = run("discard", target.id, "--why", "customer cancelled")
    assert result.exit_code == 0, result.output
    event, record = kafka.sent
    assert event.header("ce_signer") == b"operator"  # the coordinator believes an operator
    assert event.topic.endswith("saga.events") and event.key == b"saga-two"
    assert event.header("ce_type") == b"itinerant.saga.discard_requested.v1"
    assert json.loads(event.value)["why"] == "customer cancelled"
    assert json.loads(record.value)["action"] == "discarded"
    assert run("discard", target.id, "--why", "again").exit_code == 3
    assert run("discard", target.id, "--why", "again", "--force").exit_code == 0
    assert run("replay", target.id).exit_code == 3  # discarded: refused without --force


def test_cli_show_without_coordinator(kafka: FakeKafka) -> None:
    result = run("show", kafka.entries[0].id)
    assert result.exit_code == 0, result.output
    assert "saga timeline unavailable" in result.stdout
    assert "x-dlq-reason" in result.stdout and '"request": 42' in result.stdout
    body = json.loads(run("show", kafka.entries[0].id, "--json").stdout)
    assert body["payload"] == {"request": 42} and body["saga"] is None
    assert body["headers"]["ce_id"] == "a"


def test_cli_ambiguous_prefix_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [poison(offset=i, ce_id=f"m{i}") for i in range(40)]  # 40 ids share some digit
    FakeKafka(entries, []).install(monkeypatch)
    first = {e.id[0] for e in entries}
    digit = next(d for d in first if sum(e.id[0] == d for e in entries) > 1)
    result = run("show", digit)
    assert result.exit_code == 2 and "more characters" in result.stderr


def test_payload_text() -> None:
    assert cli.payload_text(b"") == ("(empty)", False)
    text, is_json = cli.payload_text(b'{"a": 1}')
    assert is_json and json.loads(text) == {"a": 1}
    text, is_json = cli.payload_text(b"\xff\xfe\x00binary" * 20)
    assert not is_json and "not JSON" in text and "ff fe 00" in text and "..." in text
