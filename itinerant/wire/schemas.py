"""Export JSON Schema of every message type, named by its versioned type, to ``schemas/``."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from itinerant.coordinator.results import SagaResult
from itinerant.wire.budget import Budget
from itinerant.wire.events import CompensateCommand, StepEvent
from itinerant.wire.slip import Slip
from services.contracts.trip import TripDocument, TripRequest

MODELS: dict[str, type[BaseModel]] = {
    "itinerant.request.v1": TripRequest,
    "itinerant.trip.v1": TripDocument,
    "itinerant.saga.event.v1": StepEvent,
    "itinerant.compensate.v1": CompensateCommand,
    "itinerant.result.v1": SagaResult,
    "itinerant.header.routingslip.v1": Slip,
    "itinerant.header.budget.v1": Budget,
}


def render(name: str, model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    schema["$id"] = f"https://itinerant.dev/schemas/{name}.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in MODELS.items():
        path = folder / f"{name}.json"
        path.write_text(render(name, model))
        written.append(path)
    return written
