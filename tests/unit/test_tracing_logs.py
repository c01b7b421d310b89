"""JSON log lines: fields, trace and saga ids, exceptions, and the root logger set-up."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from itinerant.observability import logs, tracing


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(
            TracerProvider(resource=Resource.create({"service.name": "itinerant-test"}))
        )


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def record(message: str = "hello %s", *args: Any, **extra: Any) -> logging.LogRecord:
    item = logging.LogRecord("itinerant.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(item, key, value)
    return item


def test_plain_line_has_the_base_fields_and_no_ids() -> None:
    line = json.loads(logs.JsonFormatter("planner").format(record("hello %s", "world")))
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["logger"] == "itinerant.test"
    assert line["service"] == "planner"
    assert line["time"].endswith("+00:00")
    assert "trace_id" not in line and "span_id" not in line and "saga_id" not in line


def test_line_inside_a_process_span_has_trace_span_and_saga_ids() -> None:
    formatter = logs.JsonFormatter("flights")
    with tracing.process_span(
        "flights",
        "itinerant.flights",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate=None,
        saga_id="saga-9",
        message_id="m",
        partition=0,
        offset=0,
    ) as span:
        line = json.loads(formatter.format(record()))
        ctx = span.get_span_context()
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == f"{ctx.span_id:016x}"
    assert line["saga_id"] == "saga-9"
    after = json.loads(formatter.format(record()))
    assert "trace_id" not in after and "saga_id" not in after


def test_saga_from_context_helpers_and_from_extra() -> None:
    formatter = logs.JsonFormatter("coordinator")
    token = logs.set_saga("saga-a")
    try:
        assert json.loads(formatter.format(record()))["saga_id"] == "saga-a"
        with logs.saga_context("saga-b"):
            assert json.loads(formatter.format(record()))["saga_id"] == "saga-b"
        assert logs.current_saga() == "saga-a"
    finally:
        logs.reset_saga(token)
    line = json.loads(formatter.format(record(saga_id="saga-c", message_id="m-1", obj=object())))
    assert line["saga_id"] == "saga-c"
    assert line["message_id"] == "m-1"
    assert line["obj"].startswith("<object")


def test_exception_is_one_json_field() -> None:
    formatter = logs.JsonFormatter("x")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        item = record("failed")
        item.exc_info = sys.exc_info()
    text = formatter.format(item)
    assert "\n" not in text
    line = json.loads(text)
    assert "ValueError: boom" in line["exception"]


def test_configure_logging_replaces_root_handlers(root_restored: None) -> None:
    stream = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(stream))
    logs.configure_logging("hotels", "info", stream=stream)
    logging.getLogger("some.library").info("one %d", 1)
    logging.getLogger("some.library").debug("not shown")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "one 1"
    assert all(line["service"] == "hotels" for line in lines)
    assert any("careful" in line["message"] for line in lines)
    assert len(logging.getLogger().handlers) == 1


def test_dict_config_variant_installs_the_same_formatter(root_restored: None) -> None:
    logging.config.dictConfig(logs.logging_config("notifier", "WARNING"))
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler.formatter, logs.JsonFormatter)
    assert handler.formatter.service == "notifier"
    assert logging.getLogger().level == logging.WARNING
