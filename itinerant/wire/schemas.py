"""Export JSON Schema of every message type, named by its versioned type, to ``schemas/``: the
framework's own (events, commands, results, headers) and the application's payloads."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from itinerant.coordinator.results import SagaResult
from itinerant.mesh import Mesh
from itinerant.wire.budget import Budget
from itinerant.wire.events import CompensateCommand, StepEvent
from itinerant.wire.request import Request
from itinerant.wire.slip import Slip

FRAMEWORK_MODELS: dict[str, type[BaseModel]] = {
    "itinerant.saga.event.v1": StepEvent,
    "itinerant.compensate.v1": CompensateCommand,
    "itinerant.result.v1": SagaResult,
    "itinerant.header.routingslip.v1": Slip,
    "itinerant.header.budget.v1": Budget,
}


def models(mesh: Mesh) -> dict[str, type[BaseModel]]:
    """Every exported model: the request (the mesh's, else the bare one), the mesh's payloads,
    the framework's."""
    found: dict[str, type[BaseModel]] = {"itinerant.request.v1": mesh.request_model or Request}
    found.update(mesh.schemas)
    found.update(FRAMEWORK_MODELS)
    return found


def render(name: str, model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    schema["$id"] = f"https://itinerant.dev/schemas/{name}.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(folder: Path, mesh: Mesh) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in models(mesh).items():
        path = folder / f"{name}.json"
        path.write_text(render(name, model))
        written.append(path)
    return written
