"""The README documents every setting (the settings table is the users' reference)."""

from __future__ import annotations

from pathlib import Path

from itinerant.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name in Settings.model_fields if Settings.env_name(name) not in README]
    assert not missing, f"document these settings in README.md: {missing}"
