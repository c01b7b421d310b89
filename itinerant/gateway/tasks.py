"""Saga (the coordinator's view) + result (the results topic) -> A2A task, status, artifacts.

running, compensating        -> working (the message says what happens)
parked                       -> working (parked needs an operator, not the caller; the message
                                says why and what the operator does)
awaiting_approval            -> input-required
completed                    -> completed (artifact: the saga's final payload, JSON, and a line
                                saying how it ran)
compensated                  -> failed with the reason, or canceled when an A2A client cancelled
rejected                     -> rejected
failed                       -> failed
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from a2a.types import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

from .config import METADATA_KEY
from .proto import struct, timestamp, value

CANCEL_WHY = "cancelled by A2A client"
CANCEL_REASONS = frozenset({"cancelled", "canceled"})
TERMINAL_SAGA = frozenset({"completed", "compensated", "failed", "rejected"})
_STATES: dict[str, TaskState] = {
    "running": TaskState.TASK_STATE_WORKING,
    "parked": TaskState.TASK_STATE_WORKING,
    "compensating": TaskState.TASK_STATE_WORKING,
    "awaiting_approval": TaskState.TASK_STATE_INPUT_REQUIRED,
    "completed": TaskState.TASK_STATE_COMPLETED,
    "compensated": TaskState.TASK_STATE_FAILED,
    "failed": TaskState.TASK_STATE_FAILED,
    "rejected": TaskState.TASK_STATE_REJECTED,
}
#: The states after which a task changes no more.
FINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
#: Where the saga view (and the result) keeps a completed saga's final payload.
OUTPUT_FIELD = "output"
ARTIFACT_NAME = "output"
_MESSAGE_NS = uuid.UUID("6f1d3c8e-2b7a-4e59-9c41-a2a0a2a0a2a0")


def task_state(saga: dict[str, Any]) -> TaskState:
    state = str(saga.get("state", ""))
    if state == "compensated" and cancelled(saga):
        return TaskState.TASK_STATE_CANCELED
    return _STATES.get(state, TaskState.TASK_STATE_UNSPECIFIED)


def state_name(state: TaskState) -> str:
    """``TASK_STATE_INPUT_REQUIRED`` -> ``input-required`` (the words A2A 0.3 used)."""
    name: str = TaskState.Name(state)
    return name.removeprefix("TASK_STATE_").lower().replace("_", "-")


def cancelled(saga: dict[str, Any]) -> bool:
    """Stopped at an A2A client's request (an operator's discard is a failure, not this)."""
    return saga.get("reason") in CANCEL_REASONS or CANCEL_WHY in str(saga.get("error") or "")


def terminal(saga: dict[str, Any]) -> bool:
    return str(saga.get("state", "")) in TERMINAL_SAGA


def status_text(saga: dict[str, Any], result: dict[str, Any] | None = None) -> str:
    """One line saying where the saga is and, when it needs someone, who and why."""
    state = str(saga.get("state", "unknown"))
    reason = saga.get("reason") or (result or {}).get("reason")
    error = saga.get("error") or (result or {}).get("error")
    why = ": ".join(str(x) for x in (reason, error) if x)
    if state == "completed":
        summary = result_text(result)
        return f"completed: {summary}" if summary else "completed"
    if state == "parked":
        return (
            f"parked: {why or 'a step was dead-lettered'}; waiting for an operator to replay or "
            "discard the dead-lettered message (itinerant dlq), or for the deadline "
            f"({saga.get('deadline')}) after which the saga compensates"
        )
    if state == "awaiting_approval":
        return f"awaiting approval: {why}" if why else "awaiting approval"
    if state == "compensating":
        return f"compensating (undoing completed steps): {why}" if why else "compensating"
    if state == "compensated":
        if cancelled(saga):
            return f"canceled; completed steps undone: {why}"
        return f"failed, completed steps undone: {why}" if why else "failed, completed steps undone"
    if state in ("failed", "rejected"):
        return f"{state}: {why}" if why else state
    timeline = saga.get("timeline") or []
    if timeline:
        return entry_text(timeline[-1])
    return state


def entry_text(entry: dict[str, Any]) -> str:
    detail = str(entry.get("detail") or "")
    return f"{entry.get('event')}: {detail}" if detail else str(entry.get("event"))


def final_payload(saga: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the last step of a completed saga produced: the saga view's ``output``, else the
    result's (``itinerant.result.v1``, written when the saga finished)."""
    if saga.get("state") != "completed":
        return None
    for source in (saga, result or {}):
        found = source.get(OUTPUT_FIELD)
        if isinstance(found, dict) and found:
            return found
    return None


def result_text(result: dict[str, Any] | None) -> str | None:
    """One line on how a finished saga ran, from its result: its steps and how long it took."""
    if not result:
        return None
    steps = [s for s in result.get("steps") or [] if isinstance(s, dict)]
    done = [f"{s.get('agent')}.{s.get('action')}" for s in steps if s.get("status") == "completed"]
    duration = result.get("duration_ms")
    took = f" in {float(duration):.0f} ms" if isinstance(duration, int | float) else ""
    if not done:
        return f"{result.get('status') or 'finished'}{took}" if took else None
    plural = "s" if len(done) != 1 else ""
    return f"{len(done)} step{plural} completed{took} ({', '.join(done)})"


def agent_message(saga_id: str, context_id: str, text: str, key: str) -> Message:
    return Message(
        role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
        message_id=str(uuid.uuid5(_MESSAGE_NS, f"{saga_id}:{key}")),
        task_id=saga_id,
        context_id=context_id,
    )


def _timestamp(saga: dict[str, Any]) -> datetime:
    return timestamp(saga.get("updated_at"))


def task_status(saga: dict[str, Any], result: dict[str, Any] | None, context_id: str) -> TaskStatus:
    saga_id = str(saga["saga_id"])
    text = status_text(saga, result)
    key = f"status:{saga.get('state')}:{len(saga.get('timeline') or [])}"
    return TaskStatus(
        state=task_state(saga),
        message=agent_message(saga_id, context_id, text, key),
        timestamp=_timestamp(saga),
    )


def artifacts(saga: dict[str, Any], result: dict[str, Any] | None) -> list[Artifact]:
    """The final payload of a completed saga, with a line from its result."""
    payload = final_payload(saga, result)
    if payload is None:
        return []
    parts = [Part(data=value(payload), media_type="application/json")]
    summary = result_text(result)
    if summary:
        parts.append(Part(text=summary, media_type="text/plain"))
    return [
        Artifact(
            artifact_id=f"{saga['saga_id']}:{ARTIFACT_NAME}",
            name=ARTIFACT_NAME,
            description="The saga's final payload (JSON) and its result.",
            parts=parts,
        )
    ]


def task_metadata(saga: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "saga_state": saga.get("state"),
        "reason": saga.get("reason"),
        "error": saga.get("error"),
        "steps": [
            {k: s.get(k) for k in ("index", "agent", "action", "status", "duration_ms")}
            for s in saga.get("steps") or []
        ],
        "result_seen": result is not None,
    }
    if result is not None:
        info["duration_ms"] = result.get("duration_ms")
    return {METADATA_KEY: info}


def task(saga: dict[str, Any], result: dict[str, Any] | None, context_id: str) -> Task:
    found = artifacts(saga, result)
    return Task(
        id=str(saga["saga_id"]),
        context_id=context_id,
        status=task_status(saga, result, context_id),
        artifacts=found,
        metadata=struct(task_metadata(saga, result)),
    )


def saga_from_result(result: dict[str, Any]) -> dict[str, Any]:
    """The saga as its result tells it (when the saga view has no record of it)."""
    return {
        "saga_id": result["saga_id"],
        "state": result.get("status"),
        "reason": result.get("reason"),
        "error": result.get("error"),
        "steps": result.get("steps") or [],
        OUTPUT_FIELD: result.get(OUTPUT_FIELD),
        "updated_at": result.get("finished_at"),
        "timeline": [],
    }


def result_only_task(result: dict[str, Any], context_id: str) -> Task:
    """A task known only from its result (the saga view has no record of it)."""
    return task(saga_from_result(result), result, context_id)


def submitted_task(saga_id: str, context_id: str, history: list[Message] | None = None) -> Task:
    """A task whose request is published but not yet taken by the coordinator."""
    return Task(
        id=saga_id,
        context_id=context_id,
        status=TaskStatus(
            state=TaskState.TASK_STATE_SUBMITTED,
            message=agent_message(
                saga_id, context_id, "submitted: published, waiting for the coordinator", "sub"
            ),
            timestamp=datetime.now(UTC),
        ),
        history=history or [],
        metadata=struct({METADATA_KEY: {"saga_state": None}}),
    )


def progress_events(
    saga: dict[str, Any], seen: int, context_id: str
) -> list[TaskStatusUpdateEvent]:
    """A working-state update for each timeline entry after the first ``seen`` (in order)."""
    saga_id = str(saga["saga_id"])
    timeline = list(saga.get("timeline") or [])
    state = task_state(saga)
    live = (
        state
        if state in (TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_INPUT_REQUIRED)
        else TaskState.TASK_STATE_WORKING
    )
    events = []
    for index, entry in enumerate(timeline[seen:], start=seen):
        text = entry_text(entry)
        if str(saga.get("state")) == "parked" and entry.get("event") == "step_deadlettered":
            text = status_text(saga)
        events.append(
            TaskStatusUpdateEvent(
                task_id=saga_id,
                context_id=context_id,
                status=TaskStatus(
                    state=live,
                    message=agent_message(saga_id, context_id, text, f"timeline:{index}"),
                    timestamp=timestamp(entry.get("at") or saga.get("updated_at")),
                ),
                metadata=struct({METADATA_KEY: {"event": entry.get("event"), "index": index}}),
            )
        )
    return events


def final_events(
    saga: dict[str, Any], result: dict[str, Any] | None, context_id: str
) -> list[TaskArtifactUpdateEvent | TaskStatusUpdateEvent]:
    """The artifact (when completed) and the final status of a finished saga (A2A 1.0 has no
    ``final`` flag: a stream ends after a status in a final state)."""
    saga_id = str(saga["saga_id"])
    out: list[TaskArtifactUpdateEvent | TaskStatusUpdateEvent] = [
        TaskArtifactUpdateEvent(
            task_id=saga_id, context_id=context_id, artifact=artifact, last_chunk=True
        )
        for artifact in artifacts(saga, result)
    ]
    out.append(
        TaskStatusUpdateEvent(
            task_id=saga_id,
            context_id=context_id,
            status=task_status(saga, result, context_id),
            metadata=struct(task_metadata(saga, result)),
        )
    )
    return out
