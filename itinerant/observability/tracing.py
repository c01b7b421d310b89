"""Tracing (docs/architecture.md#metrics): one OpenTelemetry trace per saga, carried in W3C
``traceparent``.

Propagation is done here, by hand, because the Kafka instrumentation packages do not see faust's
consumption and append duplicate headers; our envelope writes ``traceparent`` exactly once and
every output *replaces* it.

Spans, per the OTel messaging semantic conventions:

* ``process <topic>`` (CONSUMER): one per consumed message, child of the span that sent it. A
  replayed message (``x-replay-count`` > 0) still carries the original ``traceparent``, so its
  span joins the saga's trace; it also links to that original context and carries
  ``itinerant.replay_count``.
* ``send <topic>`` (PRODUCER): one short-lived span per output, child of the process span (or of
  the saga's stored context when no span is current, e.g. the coordinator's timers). Its context
  is what the output carries in ``traceparent``, so the next hop's process span is its child.

Retries of a handler happen inside one process span and show as ``retry`` span events.

Export: always to a JSON-lines file, ``$ITINERANT_DATA_DIR/traces/<service>.jsonl`` (read by
``itinerant trace``), and also OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Spans are
batched and written at most ~0.5 s after they end, and flushed on shutdown.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
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
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from itinerant.observability import logs
from itinerant.observability.rotation import rotate
from itinerant.wire import fastjson
from itinerant.wire.envelope import Envelope, InRecord, OutMessage, replace_headers

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
TRACER_NAME = "itinerant.runtime"
#: How long a finished span may wait in memory before it is written (ms).
EXPORT_DELAY_MS = 500
#: How long shutdown waits for the last spans to be written (ms).
SHUTDOWN_TIMEOUT_MS = 5000

SAGA_ATTRIBUTE = "messaging.message.conversation_id"
REPLAY_ATTRIBUTE = "itinerant.replay_count"
EVENT_TYPE_ATTRIBUTE = "cloudevents.event_type"


class JsonLinesExporter(SpanExporter):
    """Writes finished spans as JSON lines to a local file (works with no collector)."""

    def __init__(self, path: Path, max_bytes: int = 0, keep: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        self._max_bytes, self._keep = max_bytes, keep  # rotation (0: none)

    @property
    def path(self) -> Path:
        return self._path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(fastjson.dumps_text(span_dict(span), str) + "\n" for span in spans)
        try:
            with self._lock:
                with self._path.open("a", encoding="utf-8") as out:
                    out.write(lines)
                if self._max_bytes:
                    rotate(self._path, self._max_bytes, self._keep)
        except OSError as exc:
            log.warning("cannot write spans to %s: %s", self._path, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_dict(span: ReadableSpan) -> dict[str, Any]:
    """One span as the JSON object the traces file holds (and ``itinerant trace`` reads)."""
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
        "status_message": span.status.description,
        "service": span.resource.attributes.get("service.name"),
        "attributes": dict(span.attributes or {}),
        "events": [
            {
                "name": event.name,
                "time_ns": event.timestamp,
                "attributes": dict(event.attributes or {}),
            }
            for event in span.events
        ],
        "links": [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
    }


def traces_file(data_dir: Path, service: str) -> Path:
    return data_dir / "traces" / f"{service}.jsonl"


def configure(
    service: str,
    data_dir: Path,
    max_bytes: int = 0,
    keep: int = 0,
    file_stem: str | None = None,
) -> TracerProvider:
    """Install the tracer provider of ``service``: the traces file (``file_stem``, default the
    service's name: a replica writes its own; rotated past ``max_bytes``, ``keep`` old copies),
    plus OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Spans are written within
    ~``EXPORT_DELAY_MS``."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"itinerant-{service}"}),
        shutdown_on_exit=True,  # atexit flush, in case the worker dies without our finally
    )
    exporters: list[SpanExporter] = [
        JsonLinesExporter(traces_file(data_dir, file_stem or service), max_bytes, keep)
    ]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    for exporter in exporters:
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                schedule_delay_millis=EXPORT_DELAY_MS,
                export_timeout_millis=SHUTDOWN_TIMEOUT_MS,
            )
        )
    trace.set_tracer_provider(provider)
    return provider


def shutdown() -> None:
    """Write every span still in memory, then stop exporting. Safe to call more than once."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        try:
            provider.force_flush(SHUTDOWN_TIMEOUT_MS)
        finally:
            provider.shutdown()


_TRACERS: dict[int, trace.Tracer] = {}


def _tracer() -> trace.Tracer:
    """The runtime's tracer of the current provider, made once per provider: ``get_tracer``
    builds a new tracer (and its instrumentation scope) on every call, twice per hop otherwise."""
    provider = trace.get_tracer_provider()
    tracer = _TRACERS.get(id(provider))
    if tracer is None:
        tracer = _TRACERS[id(provider)] = provider.get_tracer(TRACER_NAME)
    return tracer


def extract(traceparent: str | None, tracestate: str | None = None) -> Context:
    if not traceparent:
        return Context()
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier)


def current_traceparent() -> tuple[str | None, str | None]:
    """``traceparent``/``tracestate`` of the current span (``None`` when there is none)."""
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
    replay_count: int = 0,
    event_type: str | None = None,
) -> Iterator[Span]:
    """``process <topic>`` CONSUMER span, child of the sender's span, current while handling.

    Also sets the saga id of log lines (:func:`itinerant.observability.logs.saga_context`).
    A replayed message (``replay_count`` > 0) links to the context it was originally sent with.
    ``event_type`` (the CloudEvents type) tells a step from its compensation in the tree.
    """
    parent = extract(traceparent, tracestate)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "messaging.consumer.group.name": f"itinerant-{service}",
    }
    if saga_id:
        attributes[SAGA_ATTRIBUTE] = saga_id
    if message_id:
        attributes["messaging.message.id"] = message_id
    if event_type:
        attributes[EVENT_TYPE_ATTRIBUTE] = event_type
    links: list[Link] = []
    if replay_count > 0:
        attributes[REPLAY_ATTRIBUTE] = replay_count
        original = trace.get_current_span(parent).get_span_context()
        if original.is_valid:
            links.append(Link(original, {"itinerant.link": "replay_of"}))
    with (
        _tracer().start_as_current_span(
            f"process {topic}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        ) as span,
        logs.saga_context(saga_id),
    ):
        yield span


def send_traceparent(
    topic: str,
    *,
    message_id: str | None = None,
    saga_id: str | None = None,
    fallback: str | None = None,
    fallback_state: str | None = None,
) -> tuple[str | None, str | None]:
    """Open and close a ``send <topic>`` PRODUCER span; return the ``traceparent`` (and
    ``tracestate``) the output must carry, replacing whatever the input carried.

    The span's parent is the current span (the process span) when there is one, else the
    context in ``fallback`` (e.g. the saga's stored ``traceparent`` in a timer). With neither,
    no span is made and ``(fallback, fallback_state)`` is returned unchanged.
    """
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        parent: Context | None = None  # the current context
    else:
        parent = extract(fallback, fallback_state)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            return fallback, fallback_state
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if saga_id:
        attributes[SAGA_ATTRIBUTE] = saga_id
    span = _tracer().start_span(
        f"send {topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    )
    try:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    finally:
        span.end()
    return carrier.get("traceparent", fallback), carrier.get("tracestate", fallback_state)


def retry_event(attempt: int, reason: str, delay_s: float) -> None:
    """Note a retry on the current span (retries happen inside one process span)."""
    trace.get_current_span().add_event(
        "retry",
        {
            "itinerant.retry.attempt": attempt,
            "error.type": reason,
            "itinerant.retry.delay_s": delay_s,
        },
    )


def mark_error(span: Span, reason: str, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message[:200]))
    span.set_attribute("error.type", reason)


def trace_id_of(traceparent: str | None) -> str | None:
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else None


def stamp(message: OutMessage, saga_id: str | None) -> OutMessage:
    """Give an outgoing message its own ``send <topic>`` span: the message's ``traceparent``
    header is replaced (never appended) by that span's context. The span's parent is the current
    span, else the context the message already carries (e.g. a saga's, in a timer)."""
    raw_id = message.header("ce_id")
    raw_parent = message.header("traceparent")
    raw_state = message.header("tracestate")
    traceparent, tracestate = send_traceparent(
        message.topic,
        message_id=raw_id.decode() if raw_id else None,
        saga_id=saga_id,
        fallback=raw_parent.decode() if raw_parent else None,
        fallback_state=raw_state.decode() if raw_state else None,
    )
    if traceparent is None:
        return message
    updates = [("traceparent", traceparent.encode())]
    if tracestate:
        updates.append(("tracestate", tracestate.encode()))
    return replace(message, headers=replace_headers(message.headers, updates))


def envelope_span(service: str, record: InRecord, env: Envelope) -> AbstractContextManager[Span]:
    """The ``process <topic>`` span of a decoded record."""
    return process_span(
        service,
        record.topic,
        traceparent=env.traceparent,
        tracestate=env.tracestate,
        saga_id=env.saga_id,
        message_id=env.id,
        partition=record.partition,
        offset=record.offset,
        replay_count=env.replay_count,
        event_type=env.type,
    )
