"""Process and send spans: parentage across hops, traceparent replaced, replay links, export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from itinerant.observability import logs, tracing
from itinerant.wire.envelope import Envelope, replace_headers

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "itinerant-test"}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def test_process_span_is_child_of_sender_with_messaging_attributes(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.process_span(
        "flights",
        "itinerant.flights",
        traceparent=TRACEPARENT,
        tracestate=None,
        saga_id="saga-1",
        message_id="m-1",
        partition=1,
        offset=42,
    ):
        assert logs.current_saga() == "saga-1"
    assert logs.current_saga() is None
    (span,) = spans.get_finished_spans()
    assert span.name == "process itinerant.flights"
    assert span.kind is SpanKind.CONSUMER
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    attributes = dict(span.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "itinerant.flights"
    assert attributes["messaging.destination.partition.id"] == "1"
    assert attributes["messaging.kafka.offset"] == 42
    assert attributes["messaging.message.id"] == "m-1"
    assert attributes["messaging.message.conversation_id"] == "saga-1"
    assert tracing.REPLAY_ATTRIBUTE not in attributes
    assert not span.links


def test_send_spans_chain_hops_into_one_trace(spans: InMemorySpanExporter) -> None:
    with tracing.process_span(
        "coordinator",
        "itinerant.requests",
        traceparent=None,
        tracestate=None,
        saga_id="saga-2",
        message_id="r-1",
        partition=0,
        offset=0,
    ) as root:
        first, _ = tracing.send_traceparent("itinerant.planner", message_id="d-1", saga_id="saga-2")
        second, _ = tracing.send_traceparent("itinerant.events", message_id="e-1")
    assert first and second and first != second
    with tracing.process_span(
        "planner",
        "itinerant.planner",
        traceparent=first,
        tracestate=None,
        saga_id="saga-2",
        message_id="d-1",
        partition=0,
        offset=0,
    ) as hop:
        pass
    finished = {s.name: s for s in spans.get_finished_spans()}
    send = finished["send itinerant.planner"]
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == root.get_span_context().span_id
    assert dict(send.attributes or {})["messaging.operation.type"] == "send"
    assert tracing.trace_id_of(first) == f"{root.get_span_context().trace_id:032x}"
    process = finished["process itinerant.planner"]
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert hop.get_span_context().trace_id == root.get_span_context().trace_id


def test_send_without_current_span_uses_the_saga_context(spans: InMemorySpanExporter) -> None:
    traceparent, _ = tracing.send_traceparent("itinerant.hotels", fallback=TRACEPARENT)
    assert traceparent is not None and traceparent != TRACEPARENT
    assert tracing.trace_id_of(traceparent) == tracing.trace_id_of(TRACEPARENT)
    (send,) = spans.get_finished_spans()
    assert send.parent is not None and f"{send.parent.span_id:016x}" == "b7ad6b7169203331"


def test_send_with_no_context_at_all_makes_no_span(spans: InMemorySpanExporter) -> None:
    assert tracing.send_traceparent("itinerant.results") == (None, None)
    assert tracing.send_traceparent("x", fallback="garbage") == ("garbage", None)
    assert not spans.get_finished_spans()


def test_output_carries_exactly_one_traceparent() -> None:
    env = Envelope(
        id="a", type="itinerant.x.y.v1", source="/s", saga_id="s", data=b"{}", traceparent="old"
    )
    headers = env.evolve(traceparent=TRACEPARENT).headers()
    assert [v for k, v in headers if k == "traceparent"] == [TRACEPARENT.encode()]
    replaced = replace_headers(headers, [("traceparent", b"new")])
    assert [v for k, v in replaced if k == "traceparent"] == [b"new"]


def test_replayed_message_stays_in_trace_and_links_to_original(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.process_span(
        "hotels",
        "itinerant.hotels",
        traceparent=TRACEPARENT,
        tracestate=None,
        saga_id="saga-3",
        message_id="m-3",
        partition=0,
        offset=7,
        replay_count=2,
    ):
        pass
    (span,) = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == tracing.trace_id_of(TRACEPARENT)
    assert dict(span.attributes or {})[tracing.REPLAY_ATTRIBUTE] == 2
    (link,) = span.links
    assert f"{link.context.span_id:016x}" == "b7ad6b7169203331"
    assert dict(link.attributes or {})["itinerant.link"] == "replay_of"


def test_retries_and_errors_are_recorded_on_the_process_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.process_span(
        "flights",
        "itinerant.flights",
        traceparent=TRACEPARENT,
        tracestate=None,
        saga_id="saga-4",
        message_id="m-4",
        partition=0,
        offset=1,
    ) as span:
        tracing.retry_event(1, "llm_timeout", 0.25)
        tracing.mark_error(span, "retries_exhausted", "gave up")
    (done,) = spans.get_finished_spans()
    assert [e.name for e in done.events] == ["retry"]
    assert dict(done.events[0].attributes or {})["error.type"] == "llm_timeout"
    assert dict(done.attributes or {})["error.type"] == "retries_exhausted"
    assert done.status.status_code.name == "ERROR"


def test_json_lines_exporter_writes_spans_the_trace_command_reads(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "svc.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "itinerant-svc"}))
    provider.add_span_processor(
        BatchSpanProcessor(tracing.JsonLinesExporter(path), schedule_delay_millis=50)
    )
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("process a", kind=SpanKind.CONSUMER) as parent:
        parent.add_event("retry", {"error.type": "x"})
        with tracer.start_as_current_span("send b", kind=SpanKind.PRODUCER):
            pass
    provider.shutdown()  # flushes
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_name = {line["name"]: line for line in lines}
    assert set(by_name) == {"process a", "send b"}
    assert by_name["send b"]["parent_id"] == by_name["process a"]["span_id"]
    assert by_name["process a"]["parent_id"] is None
    assert by_name["process a"]["service"] == "itinerant-svc"
    assert by_name["process a"]["kind"] == "CONSUMER"
    assert by_name["process a"]["events"][0]["name"] == "retry"
    assert by_name["send b"]["end_ns"] >= by_name["send b"]["start_ns"]
