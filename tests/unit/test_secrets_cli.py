"""``itinerant secrets init``: keys and tokens generated once into the folders the settings name,
readable by their owner only, never printed, and kept when run again."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from itinerant.cli.main import app
from itinerant.security.keys import KeyRing
from itinerant.settings import Settings


def test_init_generates_keys_and_tokens_once_and_prints_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "secrets"
    monkeypatch.setenv("ITINERANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ITINERANT_KEYS_DIR", str(shared / "keys"))
    monkeypatch.setenv("ITINERANT_TOKENS_FILE", str(shared / "tokens.json"))
    first = CliRunner().invoke(app, ["secrets", "init"])
    assert first.exit_code == 0, first.output
    tokens_file = shared / "tokens.json"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    stored = json.loads(tokens_file.read_text())
    secrets = [t for group in stored.values() for t in group.values()]
    assert secrets and not any(t in first.output for t in secrets)
    private = sorted((shared / "keys" / "private").iterdir())
    assert {p.stem for p in private} >= {"coordinator", "gateway", "operator"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private)
    before = {p.name: p.read_bytes() for p in private}
    again = CliRunner().invoke(app, ["secrets", "init"])
    assert again.exit_code == 0, again.output
    assert {p.name: p.read_bytes() for p in private} == before  # kept
    assert json.loads(tokens_file.read_text()) == stored
    ring = KeyRing(Settings())  # a worker with the same settings finds its key there
    assert ring.private("coordinator") is not None


def test_init_says_what_to_do_when_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ITINERANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ITINERANT_KEYS_DIR", str(blocker / "keys"))
    result = CliRunner().invoke(app, ["secrets", "init"])
    assert result.exit_code == 2
    assert "writable" in result.output
