"""The A2A request handler: every A2A method in terms of the mesh, for the caller's principal
(no task store of its own; docs/security-gateway.md).

A caller sees, streams and cancels only its own tasks; any other task id gets the very answer an
unknown one gets. Errors name no internal address: the details go to the gateway's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, NoReturn

from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.proto_utils import validate_proto_required_fields
from google.protobuf.message import Message as ProtoMessage

from itinerant.errors import BrokerUnavailable
from itinerant.mesh import Mesh
from itinerant.security.tokens import DEFAULT_PRINCIPAL, Principal
from itinerant.settings import Settings
from itinerant.wire.ids import new_id

from . import inbound, listing, tasks
from .config import GatewayConfig
from .feed import RESULT, MeshFeed, Subscription
from .guard import PRINCIPAL_KEY
from .mesh import CoordinatorUnavailable, Publisher, SagaView
from .owners import Owners, may_see, task_id_for
from .proto import to_json
from .push import InvalidWebhook, PushConfigs, PushSender, PushTarget

log = logging.getLogger(__name__)

APPEAR_TIMEOUT_S = 5.0  # how long a cancel waits for a just-published saga to reach the view
RESULT_WAIT_S = 3.0  # how long a finished saga's result may trail its state
STREAM_SLACK_S = 30.0
#: After a record of its saga wakes a stream, the view may not have taken it yet: reread after
#: these delays until the saga changed (then wait for the next record). A loaded coordinator may
#: take longer: then the stream keeps rereading, backing off to LAGGING_S (or at once on the next
#: record), for up to LAGGING_FOR_S, so a change is never missed while the mesh is quiet.
CATCH_UP_S = (0.0, 0.05, 0.2, 0.5, 1.0)
LAGGING_S = (2.0, 4.0, 8.0)
LAGGING_FOR_S = 60.0
VIEW_DOWN = "the mesh's saga state is unavailable right now; retry shortly"
INTERNAL = "internal error in the gateway; retry, and if it persists tell the operator"


def _not_found() -> NoReturn:
    """The one answer for a task that does not exist and for another caller's."""
    raise TaskNotFoundError()


def _check(params: ProtoMessage) -> None:
    """The fields A2A 1.0 requires are there; else invalid params naming each one."""
    try:
        validate_proto_required_fields(params)
    except InvalidParamsError as exc:
        found = (exc.data or {}).get("errors") or []
        problems = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in found)
        raise InvalidParamsError(
            message=f"invalid params: {problems or exc.message}", data=exc.data
        ) from exc


@contextlib.contextmanager
def _hidden(method: str, params: ProtoMessage) -> Iterator[None]:
    """The request's required fields are checked; unexpected failures become a JSON-RPC
    internal error without their text (logged)."""
    try:
        _check(params)
        yield
    except A2AError:
        raise
    except Exception as exc:
        log.exception("%s failed", method)
        raise InternalError(message=INTERNAL) from exc


def principal_of(context: ServerCallContext | None) -> Principal:
    found = context.state.get(PRINCIPAL_KEY) if context is not None else None
    return found if isinstance(found, Principal) else Principal(DEFAULT_PRINCIPAL)


class GatewayHandler(RequestHandler):
    def __init__(
        self,
        settings: Settings,
        config: GatewayConfig,
        mesh: Mesh,
        publisher: Publisher,
        view: SagaView,
        feed: MeshFeed,
        extended_card: Callable[[Principal], Awaitable[AgentCard]] | None = None,
    ) -> None:
        self.settings = settings
        self.extended_card = extended_card
        self.mesh = mesh
        self.config = config
        self.publisher = publisher
        self.view = view
        self.feed = feed
        # Published by this gateway: who for, and a label for the answer (never saga state).
        self.owners = Owners()
        self.push = PushConfigs()
        self.sender = PushSender()
        self._watchers: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        """Stop watching tasks for their webhooks (the gateway is stopping)."""
        watchers = list(self._watchers.values())
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await self.sender.close()

    # -- helpers --------------------------------------------------------------------------------

    async def _saga(self, saga_id: str) -> dict[str, Any] | None:
        try:
            return await self.view.get(saga_id)
        except CoordinatorUnavailable as exc:
            log.warning("saga view: %s", exc)
            raise InternalError(message=VIEW_DOWN) from exc

    async def _task(self, saga_id: str, principal: Principal) -> Task | None:
        """The task as the coordinator and the results topic say it is now; None when it does
        not exist or is not the caller's."""
        context_id = self.owners.context_id(saga_id)
        saga = await self._saga(saga_id)
        result = self.feed.get(saga_id)
        if not may_see(principal, self.owners, saga_id, saga, result):
            return None
        if saga is None:
            if result is not None:
                return tasks.result_only_task(result, context_id)
            if self.owners.published(saga_id):
                return tasks.submitted_task(saga_id, context_id)
            return None
        if tasks.terminal(saga) and result is None:
            result = await self.feed.wait(saga_id, RESULT_WAIT_S)
        return tasks.task(saga, result, context_id)

    def _headers(self, context: ServerCallContext | None) -> dict[str, str]:
        if context is None:
            return {}
        headers = context.state.get("headers") or {}
        return {str(k).lower(): str(v) for k, v in dict(headers).items()}

    async def _start(
        self, params: SendMessageRequest, context: ServerCallContext | None
    ) -> tuple[Task, bool]:
        """Validate and publish for the caller; returns the task and whether it was new."""
        principal = principal_of(context)
        message = params.message
        if message.task_id:
            known = await self._task(message.task_id, principal)
            if known is None:
                _not_found()
            raise InvalidParamsError(
                message=f"task {message.task_id} does not take further messages (it is "
                f"{tasks.state_name(known.status.state)}); send a new message without taskId "
                "to start another task"
            )
        try:
            request = inbound.read_request(params, self.mesh)
        except inbound.InvalidInput as exc:
            raise InvalidParamsError(message=str(exc)) from exc
        if request.request_id is not None:
            saga_id = task_id_for(principal.name, request.request_id)
            existing = await self._task(saga_id, principal)
            if existing is not None:  # the client's request id: the same request, the same task
                return existing, False
            if await self._saga(saga_id) is not None:  # taken by a message from elsewhere
                raise InvalidParamsError(
                    message=f"request_id {request.request_id!r} cannot be used; send "
                    "another (or none)"
                )
        else:
            saga_id = new_id()
        context_id = message.context_id or saga_id
        parent, state = inbound.traceparent(self._headers(context))
        try:
            await self.publisher.publish_request(request, saga_id, principal.name, parent, state)
        except BrokerUnavailable as exc:
            log.warning("request %s not published: %s", saga_id, exc)
            raise InternalError(message="the request was not published; retry shortly") from exc
        self.owners.remember(saga_id, principal.name, context_id)
        echoed = Message()
        echoed.CopyFrom(message)
        echoed.task_id, echoed.context_id = saga_id, context_id
        return tasks.submitted_task(saga_id, context_id, history=[echoed]), True

    # -- A2A methods ----------------------------------------------------------------------------

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        """Publish the request and return its task at once (the task is returned immediately
        whatever ``configuration.return_immediately`` says: a saga may run up to its deadline;
        poll GetTask, subscribe, or use SendStreamingMessage)."""
        with _hidden("SendMessage", params):
            task, _new = await self._start(params, context)
            if params.configuration.HasField("task_push_notification_config"):
                config = params.configuration.task_push_notification_config
                self._set_push(task.id, config, principal_of(context))
            return task

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        with _hidden("SendStreamingMessage", params):
            task, _new = await self._start(params, context)
            yield task
            async for event in self._follow(task.id):
                yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        """The task, then its updates until it ends; a finished task is refused (as A2A 1.0
        says) with a message pointing at GetTask."""
        with _hidden("SubscribeToTask", params):
            task = await self._task(params.id, principal_of(context))
            if task is None:
                _not_found()
            if task.status.state in tasks.FINAL_STATES:
                raise UnsupportedOperationError(
                    message=f"task {params.id} has already finished "
                    f"({tasks.state_name(task.status.state)}); GetTask returns it"
                )
            yield task
            async for event in self._follow(params.id):
                yield event

    async def _follow(self, saga_id: str) -> AsyncGenerator[Event]:
        """Status updates as the saga's timeline grows, then the artifact and the final status.

        The view is read once for a snapshot and again only when the feed reports a record of
        this saga (never on a clock). Ends at the saga's deadline plus some slack."""
        context_id = self.owners.context_id(saga_id)
        limit = time.monotonic() + self.settings.default_deadline_s + STREAM_SLACK_S
        extended = False
        seen = 0
        with self.feed.subscribe(saga_id) as wake:
            saga = await self._saga(saga_id)
            while True:
                if saga is None:
                    result = self.feed.get(saga_id)
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
                        result = self.feed.get(saga_id) or await self.feed.wait(
                            saga_id, RESULT_WAIT_S
                        )
                        for event in tasks.final_events(saga, result, context_id):
                            yield event
                        return
                kind = await wake.next(limit - time.monotonic())
                if kind is None:
                    log.info("stream of %s ended at its deadline without a final state", saga_id)
                    return
                saga = await self._catch_up(saga_id, saga, kind, wake)

    async def _catch_up(
        self, saga_id: str, before: dict[str, Any] | None, kind: str, wake: Subscription
    ) -> dict[str, Any] | None:
        """The saga after a record of it arrived: reread until the view shows a change, since
        the coordinator may not have taken the record yet: a few times briefly, then backing
        off (rereading at once when another record of the saga arrives), for a bounded time."""
        saga = before
        for delay in CATCH_UP_S:
            await asyncio.sleep(delay)
            saga = await self._saga(saga_id)
            if _changed(before, saga) or (saga is None and kind == RESULT):
                return saga
        until = time.monotonic() + LAGGING_FOR_S
        backoff = iter(LAGGING_S)
        while (left := until - time.monotonic()) > 0:
            woke = await wake.next(min(next(backoff, LAGGING_S[-1]), left))
            saga = await self._saga(saga_id)
            if _changed(before, saga) or (saga is None and (woke or kind) == RESULT):
                return saga
        return saga

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        with _hidden("GetTask", params):
            return await self._task(params.id, principal_of(context))

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        """The caller's tasks (every task for an operator), newest first, among the sagas the
        coordinator's view lists and those this gateway published that it has not taken yet."""
        with _hidden("ListTasks", params):
            principal = principal_of(context)
            query = listing.read_query(params)
            try:
                sagas = await self.view.recent(None, listing.SCANNED)
            except CoordinatorUnavailable as exc:
                log.warning("saga view: %s", exc)
                raise InternalError(message=VIEW_DOWN) from exc
            found: list[Task] = []
            listed = set()
            for saga in sagas:
                saga_id = str(saga.get("saga_id"))
                listed.add(saga_id)
                result = self.feed.get(saga_id)
                if may_see(principal, self.owners, saga_id, saga, result):
                    found.append(tasks.task(saga, result, self.owners.context_id(saga_id)))
            for saga_id in self.owners.newest():
                if saga_id not in listed and may_see(principal, self.owners, saga_id, None, None):
                    task = await self._task(saga_id, principal)
                    if task is not None:
                        found.append(task)
            return listing.page(found, query)

    async def on_cancel_task(
        self, params: CancelTaskRequest, context: ServerCallContext
    ) -> Task | None:
        """Cancel = compensate: ask the coordinator to discard the saga, for the caller."""
        with _hidden("CancelTask", params):
            return await self._cancel(params.id, principal_of(context), context)

    async def _cancel(
        self, saga_id: str, principal: Principal, context: ServerCallContext | None
    ) -> Task | None:
        saga = await self._saga(saga_id)
        if not may_see(principal, self.owners, saga_id, saga, self.feed.get(saga_id)):
            return None
        if saga is None and self.owners.published(saga_id):  # just published: let it arrive
            with self.feed.subscribe(saga_id) as wake:
                deadline = time.monotonic() + APPEAR_TIMEOUT_S
                delays = iter(CATCH_UP_S[1:])
                while saga is None and time.monotonic() < deadline:
                    if await wake.next(next(delays, 0.5)) == RESULT:
                        break
                    saga = await self._saga(saga_id)
        if saga is None:
            if self.feed.get(saga_id) is not None:
                raise TaskNotCancelableError(message=f"task {saga_id} has already finished")
            return None
        if tasks.terminal(saga):
            raise TaskNotCancelableError(
                message=f"task {saga_id} has already finished "
                f"({tasks.state_name(tasks.task_state(saga))})"
            )
        parent, _state = inbound.traceparent(self._headers(context))
        try:
            await self.publisher.publish_cancel(
                saga_id, principal.name, parent or saga.get("traceparent")
            )
        except BrokerUnavailable as exc:
            log.warning("cancel of %s not published: %s", saga_id, exc)
            raise InternalError(message="the cancel was not published; retry shortly") from exc
        task = tasks.task(saga, None, self.owners.context_id(saga_id))
        task.status.message.CopyFrom(
            tasks.agent_message(
                saga_id,
                task.context_id,
                "cancel requested: the coordinator compensates the saga (undoes its completed "
                "steps); the task ends canceled",
                f"cancel:{len(saga.get('timeline') or [])}",
            )
        )
        return task

    # -- push notifications ---------------------------------------------------------------------

    async def _own(self, task_id: str, context: ServerCallContext | None) -> Principal:
        """The caller, when the task exists and is theirs; else the not-found answer."""
        principal = principal_of(context)
        if await self._task(task_id, principal) is None:
            _not_found()
        return principal

    def _set_push(
        self, task_id: str, config: TaskPushNotificationConfig, principal: Principal
    ) -> TaskPushNotificationConfig:
        auth = config.authentication
        authorization = (
            f"{auth.scheme} {auth.credentials}"
            if config.HasField("authentication") and auth.scheme and auth.credentials
            else None
        )
        target = PushTarget(config.id or new_id(), config.url, config.token or None, authorization)
        try:
            self.push.set(task_id, target)
        except InvalidWebhook as exc:
            raise InvalidParamsError(message=str(exc)) from exc
        if task_id not in self._watchers:
            watcher = asyncio.create_task(self._watch(task_id, principal))
            self._watchers[task_id] = watcher
            watcher.add_done_callback(lambda _t: self._watchers.pop(task_id, None))
        return self._push_config(task_id, target)

    async def _watch(self, task_id: str, principal: Principal) -> None:
        """POST the task to its webhooks each time its state changes, until it ends (the body
        is an A2A 1.0 StreamResponse: ``{"task": ...}``)."""
        try:
            async for event in self._follow(task_id):
                if not isinstance(event, Task | TaskStatusUpdateEvent):
                    continue
                if not self.push.changed(task_id, tasks.state_name(event.status.state)):
                    continue
                task = await self._task(task_id, principal)
                if task is None:
                    return
                payload = {"task": to_json(task)}
                for target in self.push.targets(task_id):
                    await self.sender.send(target, payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("push notifications of %s stopped", task_id)

    def _push_config(self, task_id: str, target: PushTarget) -> TaskPushNotificationConfig:
        """The config as the caller gave it (its authentication credentials are not echoed)."""
        return TaskPushNotificationConfig(
            task_id=task_id, id=target.config_id, url=target.url, token=target.token or ""
        )

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        with _hidden("CreateTaskPushNotificationConfig", params):
            principal = await self._own(params.task_id, context)
            return self._set_push(params.task_id, params, principal)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        with _hidden("GetTaskPushNotificationConfig", params):
            await self._own(params.task_id, context)
            targets = self.push.targets(params.task_id)
            found = next((t for t in targets if params.id in ("", t.config_id)), None)
            if found is None:
                raise InvalidParamsError(
                    message=f"task {params.task_id} has no push config"
                    + (f" {params.id!r}" if params.id else "")
                )
            return self._push_config(params.task_id, found)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        """Every config of the task in one page (at most ``PushConfigs.per_task`` of them)."""
        with _hidden("ListTaskPushNotificationConfigs", params):
            await self._own(params.task_id, context)
            return ListTaskPushNotificationConfigsResponse(
                configs=[
                    self._push_config(params.task_id, t) for t in self.push.targets(params.task_id)
                ]
            )

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        with _hidden("DeleteTaskPushNotificationConfig", params):
            await self._own(params.task_id, context)
            if not self.push.delete(params.task_id, params.id):
                raise InvalidParamsError(
                    message=f"task {params.task_id} has no push config {params.id!r}"
                )

    # -- the extended card ----------------------------------------------------------------------

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        """The card for the authenticated caller (the guard let only such callers through)."""
        with _hidden("GetExtendedAgentCard", params):
            if self.extended_card is None:
                raise UnsupportedOperationError(message="this gateway has no extended card")
            return await self.extended_card(principal_of(context))


def _changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    if after is None:
        return False
    if before is None:
        return True
    return len(after.get("timeline") or []) != len(before.get("timeline") or []) or after.get(
        "state"
    ) != before.get("state")


def _deadline_monotonic(saga: dict[str, Any]) -> float:
    try:
        deadline = datetime.fromisoformat(str(saga.get("deadline")))
    except ValueError:
        return time.monotonic()
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return time.monotonic() + (deadline - datetime.now(UTC)).total_seconds()
