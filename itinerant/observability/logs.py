"""Structured logs (docs/architecture.md#metrics): one JSON object per line, with the trace id on
every line.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and ``service``; while
a span is current also ``trace_id`` and ``span_id``; while a message of a saga is handled also
``saga_id`` (set by :func:`itinerant.observability.tracing.process_span` through
:func:`saga_context`, or passed as ``extra={"saga_id": ...}``); ``exception`` when there is a
traceback; and any other ``extra`` fields a caller passed that are JSON-serialisable.

Faust's worker reconfigures the root logger when it starts unless it is built with
``override_logging=False``; the worker therefore calls :func:`configure_logging` first and passes
that flag (or, equivalently, ``logging_config=logging_config(service, level)``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from opentelemetry import trace

_SAGA: ContextVar[str | None] = ContextVar("itinerant_saga_id", default=None)

#: LogRecord attributes that are not user ``extra`` fields.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_OWN = ("time", "level", "logger", "message", "service", "trace_id", "span_id", "saga_id")


def set_saga(saga_id: str | None) -> Token[str | None]:
    """Make ``saga_id`` the saga of the log lines of this task; undo with :func:`reset_saga`."""
    return _SAGA.set(saga_id)


def reset_saga(token: Token[str | None]) -> None:
    _SAGA.reset(token)


def current_saga() -> str | None:
    return _SAGA.get()


@contextmanager
def saga_context(saga_id: str | None) -> Iterator[None]:
    """Log lines inside carry ``saga_id`` (context-local: safe across asyncio tasks)."""
    token = _SAGA.set(saga_id)
    try:
        yield
    finally:
        _SAGA.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (see the module docstring for the fields)."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = f"{ctx.trace_id:032x}"
            entry["span_id"] = f"{ctx.span_id:016x}"
        saga_id = getattr(record, "saga_id", None) or _SAGA.get()
        if saga_id:
            entry["saga_id"] = str(saga_id)
        for key, value in record.__dict__.items():
            if key in _STANDARD or key in _OWN or key.startswith("_"):
                continue
            entry[key] = value if _jsonable(value) else repr(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def json_handler(service: str | None, stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    return handler


def configure_logging(
    service: str | None, level: str | int = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Replace the root logger's handlers by one JSON-lines handler (on stderr by default).

    Python warnings and uncaught exceptions (main thread and other threads) are logged through
    it too, so a service's log file holds nothing but JSON lines.
    """
    handler = json_handler(service, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    return handler


def logging_config(service: str | None, level: str | int = "INFO") -> dict[str, Any]:
    """The same set-up as :func:`configure_logging`, as a ``logging.config.dictConfig`` dict
    (what ``faust.Worker(logging_config=...)`` accepts)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": service}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper() if isinstance(level, str) else level, "handlers": ["json"]},
    }


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("itinerant").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    value = args.exc_value if args.exc_value is not None else args.exc_type()
    logging.getLogger("itinerant").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, value, args.exc_traceback),
    )
