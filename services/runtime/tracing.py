"""Trace propagation in headers (W3C ``traceparent``), done here because the Kafka
instrumentation packages do not see faust's consumption and append duplicate headers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


class JsonLinesExporter(SpanExporter):
    """Writes finished spans as JSON lines to a local file (works with no collector)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._path.open("a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(_span_dict(span)) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _span_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "service": span.resource.attributes.get("service.name"),
        "attributes": dict(span.attributes or {}),
        "links": [f"{link.context.trace_id:032x}" for link in span.links],
    }


def configure(service: str, data_dir: Path) -> None:
    """Install a tracer provider: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else a file."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"itinerant-{service}"}))
    exporter: SpanExporter
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = JsonLinesExporter(data_dir / "traces" / f"{service}.jsonl")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)


def shutdown() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def extract(traceparent: str | None, tracestate: str | None = None) -> Context:
    carrier = {"traceparent": traceparent or ""}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier) if traceparent else Context()


def current_traceparent() -> tuple[str | None, str | None]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


@contextmanager
def process_span(
    service: str,
    topic: str,
    *,
    traceparent: str | None,
    tracestate: str | None,
    saga_id: str | None,
    message_id: str | None,
    partition: int,
    offset: int,
) -> Iterator[Span]:
    """``process <topic>`` span (OTel messaging conventions), child of the sender's span."""
    tracer = trace.get_tracer("itinerant.runtime")
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.consumer.group.name": f"itinerant-{service}",
    }
    if saga_id:
        attributes["messaging.message.conversation_id"] = saga_id
    if message_id:
        attributes["messaging.message.id"] = message_id
    with tracer.start_as_current_span(
        f"process {topic}",
        context=extract(traceparent, tracestate),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


def mark_error(span: Span, reason: str, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message[:200]))
    span.set_attribute("error.type", reason)


def trace_id_of(traceparent: str | None) -> str | None:
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None
