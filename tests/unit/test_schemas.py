"""The JSON Schemas checked in under schemas/ are exactly what the models export
(docs/wire-contract.md#schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itinerant.wire.schemas import models, render
from services.mesh import mesh

MODELS = models(mesh)

SCHEMAS = Path(__file__).parents[2] / "schemas"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checked_in_schema_matches_the_model(name: str) -> None:
    path = SCHEMAS / f"{name}.json"
    assert path.exists(), f"{path} is missing: run `itinerant schemas` and commit schemas/"
    assert path.read_text() == render(name, MODELS[name]), (
        f"schemas/{name}.json differs from {MODELS[name].__name__}: "
        "run `itinerant schemas` and commit schemas/"
    )


def test_no_stray_schema_files() -> None:
    on_disk = {p.name.removesuffix(".json") for p in SCHEMAS.glob("*.json")}
    assert on_disk == set(MODELS), (
        f"schemas/ has {sorted(on_disk - set(MODELS))} that no model exports and lacks "
        f"{sorted(set(MODELS) - on_disk)}: run `itinerant schemas` and commit schemas/"
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_names_are_versioned_and_ids_match(name: str) -> None:
    assert name.rsplit(".", 1)[-1].startswith("v")
    schema = json.loads(render(name, MODELS[name]))
    assert schema["$id"] == f"https://itinerant.dev/schemas/{name}.json"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
