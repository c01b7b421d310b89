"""The A2A request handler: every A2A method in terms of the mesh (no task store of its own)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any, NoReturn

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import (
    DeleteTaskPushNotificationConfigParams,
    GetTaskPushNotificationConfigParams,
    InternalError,
    InvalidParamsError,
    ListTaskPushNotificationConfigParams,
    Message,
    MessageSendParams,
    Task,
    TaskIdParams,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskPushNotificationConfig,
    TaskQueryParams,
    UnsupportedOperationError,
)
from a2a.utils.errors import ServerError

from itinerant.errors import BrokerUnavailable
from itinerant.mesh import Mesh
from itinerant.settings import Settings
from itinerant.wire.ids import new_id

from . import inbound, tasks
from .config import GatewayConfig
from .mesh import CoordinatorUnavailable, Publisher, ResultsFollower, SagaView

log = logging.getLogger(__name__)

PENDING_KEPT = 10_000
APPEAR_TIMEOUT_S = 5.0  # how long a cancel waits for a just-published saga to reach the view
RESULT_WAIT_S = 3.0  # how long a finished saga's result may trail its state
STREAM_SLACK_S = 30.0
NO_PUSH = (
    "push notifications are not supported by this agent; stream with message/stream or "
    "poll tasks/get"
)


def _fail(error: Any) -> NoReturn:
    raise ServerError(error=error)


class GatewayHandler(RequestHandler):
    def __init__(
        self,
        settings: Settings,
        config: GatewayConfig,
        mesh: Mesh,
        publisher: Publisher,
        view: SagaView,
        results: ResultsFollower,
    ) -> None:
        self.settings = settings
        self.mesh = mesh
        self.config = config
        self.publisher = publisher
        self.view = view
        self.results = results
        # Published by this gateway but maybe not yet in the coordinator's view: saga id ->
        # (context id, when). A label for the answer, never the saga's state.
        self._pending: OrderedDict[str, tuple[str, float]] = OrderedDict()

    # -- helpers --------------------------------------------------------------------------------

    def _context_id(self, saga_id: str) -> str:
        found = self._pending.get(saga_id)
        return found[0] if found else saga_id

    def _remember(self, saga_id: str, context_id: str) -> None:
        self._pending[saga_id] = (context_id, time.monotonic())
        self._pending.move_to_end(saga_id)
        while len(self._pending) > PENDING_KEPT:
            self._pending.popitem(last=False)

    async def _saga(self, saga_id: str) -> dict[str, Any] | None:
        try:
            return await self.view.get(saga_id)
        except CoordinatorUnavailable as exc:
            _fail(InternalError(message=str(exc)))

    async def _task(self, saga_id: str) -> Task | None:
        """The task as the coordinator and the results topic say it is now."""
        context_id = self._context_id(saga_id)
        saga = await self._saga(saga_id)
        if saga is None:
            result = self.results.get(saga_id)
            if result is not None:
                return tasks.result_only_task(result, context_id)
            if saga_id in self._pending:
                return tasks.submitted_task(saga_id, context_id)
            return None
        result = self.results.get(saga_id)
        if tasks.terminal(saga) and result is None:
            result = await self.results.wait(saga_id, RESULT_WAIT_S)
        return tasks.task(saga, result, context_id)

    def _headers(self, context: ServerCallContext | None) -> dict[str, str]:
        if context is None:
            return {}
        headers = context.state.get("headers") or {}
        return {str(k).lower(): str(v) for k, v in dict(headers).items()}

    async def _start(
        self, params: MessageSendParams, context: ServerCallContext | None
    ) -> tuple[Task, bool]:
        """Validate and publish; returns the task and whether it was new."""
        message = params.message
        if message.task_id:
            known = await self._task(message.task_id)
            if known is None:
                _fail(TaskNotFoundError(message=f"no task {message.task_id!r}"))
            _fail(
                InvalidParamsError(
                    message=f"task {message.task_id} does not take further messages (it is "
                    f"{known.status.state.value}); send a new message without taskId to start "
                    "another task"
                )
            )
        try:
            request = inbound.read_request(params, self.mesh)
        except inbound.InvalidInput as exc:
            _fail(InvalidParamsError(message=str(exc)))
        saga_id = request.request_id or new_id()
        context_id = message.context_id or saga_id
        if request.request_id is not None:
            existing = await self._task(saga_id)
            if existing is not None:  # the client's request id: the same request, the same task
                return existing, False
        parent, state = inbound.traceparent(self._headers(context))
        try:
            await self.publisher.publish_request(request, saga_id, parent, state)
        except BrokerUnavailable as exc:
            _fail(InternalError(message=f"the request was not published: {exc}"))
        self._remember(saga_id, context_id)
        echoed = message.model_copy(update={"task_id": saga_id, "context_id": context_id})
        return tasks.submitted_task(saga_id, context_id, history=[echoed]), True

    # -- A2A methods ----------------------------------------------------------------------------

    async def on_message_send(
        self, params: MessageSendParams, context: ServerCallContext | None = None
    ) -> Task | Message:
        """Publish the request and return its task at once (``configuration.blocking`` is not
        honoured: a saga may run up to its deadline; poll tasks/get or use message/stream)."""
        task, _new = await self._start(params, context)
        return task

    async def on_message_send_stream(
        self, params: MessageSendParams, context: ServerCallContext | None = None
    ) -> AsyncGenerator[Event]:
        task, _new = await self._start(params, context)
        yield task
        async for event in self._follow(task.id, seen=0):
            yield event

    async def on_resubscribe_to_task(
        self, params: TaskIdParams, context: ServerCallContext | None = None
    ) -> AsyncGenerator[Event]:
        task = await self._task(params.id)
        if task is None:
            _fail(TaskNotFoundError(message=f"no task {params.id!r}"))
        yield task
        if task.status.state.value in ("completed", "failed", "canceled", "rejected"):
            return
        async for event in self._follow(params.id, seen=0):
            yield event

    async def _follow(self, saga_id: str, seen: int) -> AsyncGenerator[Event]:
        """Status updates as the saga's timeline grows, by polling the saga view; then the
        artifact and the final status. Ends at the saga's deadline plus some slack."""
        context_id = self._context_id(saga_id)
        limit = time.monotonic() + self.settings.default_deadline_s + STREAM_SLACK_S
        extended = False
        while time.monotonic() < limit:
            saga = await self._saga(saga_id)
            if saga is None:
                result = self.results.get(saga_id)
                if result is not None:  # known only by its result (e.g. refused at ingress)
                    saga = tasks.saga_from_result(result)
                    for event in tasks.final_events(saga, result, context_id):
                        yield event
                    return
            else:
                if not extended:
                    limit = max(limit, _deadline_monotonic(saga) + STREAM_SLACK_S)
                    extended = True
                events = tasks.progress_events(saga, seen, context_id)
                seen += len(events)
                for update in events:
                    yield update
                if tasks.terminal(saga):
                    result = self.results.get(saga_id) or await self.results.wait(
                        saga_id, RESULT_WAIT_S
                    )
                    for event in tasks.final_events(saga, result, context_id):
                        yield event
                    return
            await asyncio.sleep(self.config.poll_interval_s)
        log.info("stream of %s ended at its deadline without a final state", saga_id)

    async def on_get_task(
        self, params: TaskQueryParams, context: ServerCallContext | None = None
    ) -> Task | None:
        return await self._task(params.id)

    async def on_cancel_task(
        self, params: TaskIdParams, context: ServerCallContext | None = None
    ) -> Task | None:
        """Cancel = compensate: ask the coordinator to discard the saga."""
        saga_id = params.id
        saga = await self._saga(saga_id)
        if saga is None and saga_id in self._pending:  # published a moment ago: let it arrive
            deadline = time.monotonic() + APPEAR_TIMEOUT_S
            while saga is None and time.monotonic() < deadline:
                await asyncio.sleep(self.config.poll_interval_s / 2)
                saga = await self._saga(saga_id)
        if saga is None:
            if self.results.get(saga_id) is not None:
                _fail(TaskNotCancelableError(message=f"task {saga_id} has already finished"))
            return None
        if tasks.terminal(saga):
            _fail(
                TaskNotCancelableError(
                    message=f"task {saga_id} has already finished ({tasks.task_state(saga).value})"
                )
            )
        parent, _state = inbound.traceparent(self._headers(context))
        try:
            await self.publisher.publish_cancel(saga_id, parent or saga.get("traceparent"))
        except BrokerUnavailable as exc:
            _fail(InternalError(message=f"the cancel was not published: {exc}"))
        task = tasks.task(saga, None, self._context_id(saga_id))
        task.status.message = tasks.agent_message(
            saga_id,
            task.context_id,
            "cancel requested: the coordinator compensates the saga (undoes its completed "
            "steps); the task ends canceled",
            f"cancel:{len(saga.get('timeline') or [])}",
        )
        return task

    # -- not supported --------------------------------------------------------------------------

    async def on_set_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext | None = None
    ) -> TaskPushNotificationConfig:
        _fail(UnsupportedOperationError(message=NO_PUSH))

    async def on_get_task_push_notification_config(
        self,
        params: TaskIdParams | GetTaskPushNotificationConfigParams,
        context: ServerCallContext | None = None,
    ) -> TaskPushNotificationConfig:
        _fail(UnsupportedOperationError(message=NO_PUSH))

    async def on_list_task_push_notification_config(
        self, params: ListTaskPushNotificationConfigParams, context: ServerCallContext | None = None
    ) -> list[TaskPushNotificationConfig]:
        _fail(UnsupportedOperationError(message=NO_PUSH))

    async def on_delete_task_push_notification_config(
        self,
        params: DeleteTaskPushNotificationConfigParams,
        context: ServerCallContext | None = None,
    ) -> None:
        _fail(UnsupportedOperationError(message=NO_PUSH))


def _deadline_monotonic(saga: dict[str, Any]) -> float:
    try:
        deadline = datetime.fromisoformat(str(saga.get("deadline")))
    except ValueError:
        return time.monotonic()
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return time.monotonic() + (deadline - datetime.now(UTC)).total_seconds()
