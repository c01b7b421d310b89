"""Prometheus metrics of every service (docs/architecture.md#metrics). Labels are bounded: never an
id.

Every metric the system exports is declared here, once, so dashboards and alert rules have one
list to check against (``tests/unit/test_metrics_catalogue.py``).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

MESSAGES_PROCESSED = Counter(
    "itinerant_messages_processed_total",
    "Messages handled by a service, by outcome "
    "(ok, duplicate, dead_lettered, saga_failed, compensated).",
    ["service", "topic", "outcome"],
)
PROCESSING_SECONDS = Histogram(
    "itinerant_processing_seconds",
    "Time to handle one message, decode to outputs acknowledged.",
    ["service", "topic"],
    buckets=LATENCY_BUCKETS,
)
SAGA_DURATION_SECONDS = Histogram(
    "itinerant_saga_duration_seconds",
    "End-to-end time of a saga, request accepted to result written.",
    ["outcome"],
    buckets=SAGA_BUCKETS,
)
SAGAS = Gauge("itinerant_sagas", "Sagas known to the coordinator, by state.", ["state"])
SAGAS_FINISHED = Counter(
    "itinerant_sagas_finished_total", "Sagas that reached a terminal state.", ["state", "reason"]
)
DLQ_MESSAGES = Counter(
    "itinerant_dlq_messages_total", "Messages dead-lettered, by reason.", ["service", "reason"]
)
DLQ_REPLAYS = Counter(
    "itinerant_dlq_replays_total", "Dead-lettered messages replayed or discarded.", ["action"]
)
RETRIES = Counter(
    "itinerant_retries_total", "Retries of retryable failures.", ["service", "reason"]
)
DELIVERY_FAILURES = Counter(
    "itinerant_delivery_failures_total",
    "Failed tries to deliver outputs to Kafka (each is tried again until delivered).",
    ["service"],
)
TRANSACTIONS = Counter(
    "itinerant_transactions_total",
    "Kafka transactions of handled records, by outcome (committed, aborted, dropped: its "
    "records' partitions had moved to another member, which handles them again).",
    ["service", "outcome"],
)
CIRCUIT_STATE = Gauge(
    "itinerant_circuit_breaker_state",
    "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open.",
    ["service", "dependency"],
)
CONSUMER_LAG = Gauge(
    "itinerant_consumer_lag_messages",
    "Approximate consumer lag (high watermark minus position).",
    ["service", "topic"],
)
LLM_TOKENS = Counter("itinerant_llm_tokens_total", "LLM tokens used.", ["service", "model", "kind"])
LLM_COST = Counter("itinerant_llm_cost_usd_total", "LLM spend in US dollars.", ["service", "model"])
TOOL_CALLS = Counter(
    "itinerant_tool_calls_total",
    "MCP tool calls, by server, tool and outcome.",
    ["service", "server", "tool", "outcome"],
)
TOOL_CALL_SECONDS = Histogram(
    "itinerant_tool_call_seconds",
    "Duration of MCP tool calls (retries included).",
    ["service", "server", "tool"],
    buckets=LATENCY_BUCKETS,
)
BUDGET_EXCEEDED = Counter(
    "itinerant_budget_exceeded_total", "Requests stopped by a budget, by kind.", ["service", "kind"]
)
APPROVALS = Counter(
    "itinerant_approvals_total",
    "Approval gates passed, by outcome (not_needed, requested, approved, rejected, expired).",
    ["outcome"],
)
BROKER_PARTITION_MESSAGES = Gauge(
    "itinerant_broker_partition_messages",
    "Messages stored in a partition (high watermark); the embedded broker stalls past ~20k "
    "batches.",
    ["topic", "partition"],
)
STORE_BYTES = Gauge(
    "itinerant_store_bytes",
    "Size of a service's state store on disk (database and write-ahead log).",
    ["service", "store"],
)
STORE_PRUNED = Counter(
    "itinerant_store_pruned_total",
    "Inbox rows (processed-message ids) pruned past ITINERANT_INBOX_RETENTION_S.",
    ["service"],
)
SERVICE_UP = Gauge("itinerant_service_up", "1 while the service is running.", ["service"])


def serve(port: int | None, host: str = "127.0.0.1") -> None:
    """Expose ``/metrics`` on ``host:port`` (no-op for ``None``)."""
    if port is None:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics port %s unavailable (%s); metrics not exposed", port, exc)
