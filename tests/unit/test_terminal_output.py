"""Operator output cannot drive the terminal: message content carrying escape sequences, OSC 8
hyperlinks, carriage-return overwrites, bidi overrides and rich markup is shown escaped by
every command that prints it (docs/security.md#operator-output)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from itinerant.cli import approvals, top
from itinerant.cli.terminal import emit_json, safe, visible
from itinerant.cli.trace import trace_command
from itinerant.errors import HandlerError
from itinerant.observability.tracing import SAGA_ATTRIBUTE
from itinerant.operators import dlq_actions as da
from itinerant.runtime.dlq import dead_letter
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope, InRecord
from tests.unit.test_dlq_cli import FakeKafka, run

ESC_RED = "\x1b[31m"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
TITLE = "\x1b]0;owned\x07"
CSI_C1 = "\x9b2J"
OVERWRITE = "all good\rFAKE"
BIDI = "\u202eevil\u202c"
MARKUP = "[link=https://evil.example/]x[/link][bold red]boom"
HOSTILE = ESC_RED + OSC8 + TITLE + CSI_C1 + OVERWRITE + BIDI + "\b\x00" + MARKUP
RAW = ("\x1b", "\x9b", "\x07", "\r", "\b", "\x00", "\u202e", "\u202c")


def assert_inert(output: str, shown: tuple[str, ...] = ("\\x1b", "\\u202e")) -> None:
    for char in RAW:
        assert char not in output, f"raw {char!r} reached the terminal"
    for escape in shown:
        assert escape in output, f"{escape} not shown"


def test_visible_writes_controls_out() -> None:
    assert visible("a\x1b[1mb") == "a\\x1b[1mb"
    assert visible("\x9b\r\b\x7f") == "\\x9b\\x0d\\x08\\x7f"
    assert visible("\u202e\u2066\u200b\u2028\U000e0001") == (
        "\\u202e\\u2066\\u200b\\u2028\\U000e0001"
    )
    assert visible("line\nnext\ttab") == "line\\x0anext\\x09tab"
    assert visible("line\nnext\ttab", multiline=True) == "line\nnext\ttab"
    assert visible("José, 東京, ok") == "José, 東京, ok"
    assert safe("[bold]x\x1b") == "\\[bold]x\\x1b"


def test_emitted_json_stays_valid_inert_and_unwrapped(capsys: pytest.CaptureFixture[str]) -> None:
    data = {"a": HOSTILE, "name": "José", "long": "x" * 500}
    emit_json(data)
    text = capsys.readouterr().out
    assert json.loads(text) == data
    for char in RAW:
        assert char not in text
    assert all(ord(c) < 128 for c in text)  # every other character escaped
    assert any(len(line) > 500 for line in text.splitlines())  # never cut at a width


def hostile_entry() -> da.DlqEntry:
    env = Envelope(
        id="m-" + ESC_RED,
        type="itinerant.flights.book.v1" + TITLE,
        source="/itinerant/planner",
        saga_id="saga-" + OSC8 + MARKUP,
        data=json.dumps({"note": HOSTILE}).encode(),
    )
    headers = [*env.headers(), ("x-note" + ESC_RED, HOSTILE.encode())]
    record = InRecord("itinerant.agent.flights", 0, 3, None, env.data, headers)
    out = dead_letter(
        record,
        HandlerError("handler said: " + HOSTILE),
        service="flights",
        dlq_topic="itinerant.dlq",
        attempts=1,
        saga_id=env.saga_id,
        max_bytes=1_000_000,
    )
    return da.DlqEntry.from_record(InRecord(out.topic, 0, 0, out.key, out.value, out.headers))


def test_dlq_list_and_show_escape_message_content(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = hostile_entry()
    FakeKafka([entry], []).install(monkeypatch)
    listed = run("list")
    assert listed.exit_code == 0, listed.output
    assert_inert(listed.stdout, ("\\x1b",))
    shown = run("show", entry.id)
    assert shown.exit_code == 0, shown.output
    assert_inert(shown.stdout)
    assert "[link=https://evil.example/]x[/link][bold red]boom" in shown.stdout  # not applied
    assert "all good\\x0dFAKE" in shown.stdout.replace("\n", "")
    payload = run("show", entry.id, "--json")
    assert all(c not in payload.stdout for c in RAW)


def hostile_saga() -> dict[str, Any]:
    return {
        "saga_id": "s-1" + ESC_RED,
        "state": "awaiting_approval",
        "reason": MARKUP,
        "error": HOSTILE,
        "created_at": "2024-05-01T12:00:00" + TITLE,
        "deadline": "2024-05-01T12:10:00",
        "approval": {
            "amount_usd": 1200.0,
            "reasons": ["over policy " + HOSTILE],
            "requested_at": "2024-05-01T12:00:01",
            "deadline": "2024-05-01T12:10:00" + BIDI,
            "slip": {"next": 0, "steps": [{"agent": "a"}, {"agent": "b" + OSC8}]},
        },
        "steps": [
            {
                "index": 0,
                "agent": "a" + ESC_RED,
                "action": "run" + MARKUP,
                "status": "completed",
                "duration_ms": 1.0,
                "at": "2024-05-01T12:00:00.000" + OVERWRITE,
                "reason": HOSTILE,
            }
        ],
        "timeline": [{"at": "2024-05-01T12:00:00.000", "event": "x", "detail": HOSTILE}],
    }


def test_approvals_list_and_show_escape_message_content(monkeypatch: pytest.MonkeyPatch) -> None:
    saga = hostile_saga()
    monkeypatch.setattr(
        approvals, "_get", lambda _s, path: {"sagas": [saga]} if "?" in path else saga
    )
    runner = CliRunner()
    for args in (["list"], ["show", "s-1"], ["list", "--json"], ["show", "s-1", "--json"]):
        result = runner.invoke(approvals.approvals_app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for char in RAW:
            assert char not in result.stdout, (args, char)
    shown = runner.invoke(approvals.approvals_app, ["show", "s-1"], env={"COLUMNS": "200"})
    assert "\\x1b" in shown.stdout and "[link=https://evil.example/]x[/link]" in shown.stdout


def test_trace_escapes_span_names_and_errors(tmp_path: Path) -> None:
    saga = "saga-t"
    span = {
        "trace_id": "t1",
        "span_id": "s1",
        "name": "process " + HOSTILE,
        "kind": "CONSUMER",
        "start_ns": 1,
        "end_ns": 2,
        "status": "ERROR",
        "status_message": HOSTILE,
        "attributes": {SAGA_ATTRIBUTE: saga, "itinerant.service": "flights" + ESC_RED},
    }
    (tmp_path / "flights.jsonl").write_text(json.dumps(span) + "\n")
    import typer

    app = typer.Typer()
    app.command()(trace_command)
    result = CliRunner().invoke(app, [saga, "--dir", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)


def test_top_escapes_metric_labels() -> None:
    row = top.ServiceRow(service="flights" + ESC_RED, up=False, error="down " + BIDI)
    view = top.Frame(
        at=0.0,
        rows=[row],
        dlq_by_reason={("flights" + TITLE, "reason " + MARKUP): 1.0},
        sagas_by_state={"parked" + OSC8: 1.0},
        slowest=None,
    )
    out = StringIO()
    Console(file=out, width=200, force_terminal=False).print(top.render(view, Settings()))
    assert_inert(out.getvalue())
