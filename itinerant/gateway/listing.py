"""ListTasks: the caller's tasks filtered, newest first, a page at a time
(docs/security-gateway.md#a2a-10-methods).

A page token is the offset of the page's first task in the filtered list, so a token is only
good while the list does not change much; the tasks are read from the newest ``SCANNED`` sagas
of the coordinator's view (its limit), so older tasks are not listed (GetTask still finds them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from a2a.types import ListTasksRequest, ListTasksResponse, Task, TaskState
from a2a.utils.constants import DEFAULT_LIST_TASKS_PAGE_SIZE, MAX_LIST_TASKS_PAGE_SIZE
from a2a.utils.errors import InvalidParamsError

SCANNED = 1000


@dataclass(frozen=True)
class Query:
    context_id: str
    status: TaskState
    after: datetime | None
    size: int
    offset: int
    history_length: int | None


def read_query(params: ListTasksRequest) -> Query:
    """The request's filters and page; raises ``InvalidParamsError`` saying what is wrong."""
    size = params.page_size if params.HasField("page_size") else DEFAULT_LIST_TASKS_PAGE_SIZE
    if not 1 <= size <= MAX_LIST_TASKS_PAGE_SIZE:
        raise InvalidParamsError(
            message=f"pageSize must be from 1 to {MAX_LIST_TASKS_PAGE_SIZE}, not {size}"
        )
    token = params.page_token
    if token and not token.isdigit():
        raise InvalidParamsError(message="pageToken must be a nextPageToken this gateway returned")
    return Query(
        context_id=params.context_id,
        status=params.status,
        after=(
            params.status_timestamp_after.ToDatetime(tzinfo=UTC)
            if params.HasField("status_timestamp_after")
            else None
        ),
        size=size,
        offset=int(token) if token else 0,
        history_length=params.history_length if params.HasField("history_length") else None,
    )


def _when(task: Task) -> datetime:
    when: datetime = task.status.timestamp.ToDatetime(tzinfo=UTC)
    return when


def page(found: list[Task], query: Query) -> ListTasksResponse:
    """The page of ``found`` that ``query`` asks for (newest status first)."""
    kept = [
        t
        for t in found
        if (not query.context_id or t.context_id == query.context_id)
        and (query.status == TaskState.TASK_STATE_UNSPECIFIED or t.status.state == query.status)
        and (query.after is None or _when(t) > query.after)
    ]
    kept.sort(key=_when, reverse=True)
    chosen = kept[query.offset : query.offset + query.size]
    if query.history_length is not None:
        for task in chosen:
            if len(task.history) > query.history_length:
                keep = list(task.history)[len(task.history) - query.history_length :]
                del task.history[:]
                task.history.extend(keep)
    following = query.offset + len(chosen)
    return ListTasksResponse(
        tasks=chosen,
        next_page_token=str(following) if following < len(kept) else "",
        page_size=query.size,
        total_size=len(kept),
    )
