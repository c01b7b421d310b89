"""``itinerant top`` figures from scraped metrics, and the lag arithmetic."""

from __future__ import annotations

import pytest
from rich.console import Console

from itinerant.cli.top import Scrape, frame, parse_metrics, quantile, render
from itinerant.observability.lag import partition_lag
from itinerant.settings import Settings


def metrics_text(processed: int, slow: int = 0) -> str:
    fast = processed - slow
    return f"""
# TYPE itinerant_messages_processed_total counter
itinerant_messages_processed_total{{service="flights",topic="t.flights",outcome="ok"}} {processed}
itinerant_messages_processed_total{{service="flights",topic="t.flights",outcome="dead_lettered"}} 2
# TYPE itinerant_dlq_messages_total counter
itinerant_dlq_messages_total{{service="flights",reason="invalid_json"}} 2
# TYPE itinerant_consumer_lag_messages gauge
itinerant_consumer_lag_messages{{service="flights",topic="t.flights"}} 7
# TYPE itinerant_processing_seconds histogram
itinerant_processing_seconds_bucket{{service="flights",topic="t.flights",le="0.01"}} {fast}
itinerant_processing_seconds_bucket{{service="flights",topic="t.flights",le="0.1"}} {processed}
itinerant_processing_seconds_bucket{{service="flights",topic="t.flights",le="+Inf"}} {processed}
itinerant_processing_seconds_count{{service="flights",topic="t.flights"}} {processed}
itinerant_processing_seconds_sum{{service="flights",topic="t.flights"}} 1.0
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1000.0
"""


def coordinator_text() -> str:
    return """
# TYPE itinerant_sagas gauge
itinerant_sagas{state="completed"} 3
itinerant_sagas{state="running"} 1
"""


def test_quantile_interpolates_like_histogram_quantile() -> None:
    assert quantile(0.5, {0.1: 50, 0.2: 100, float("inf"): 100}) == pytest.approx(0.1)
    assert quantile(0.75, {0.1: 50, 0.2: 100, float("inf"): 100}) == pytest.approx(0.15)
    assert quantile(0.99, {0.1: 0, float("inf"): 10}) == 0.1
    assert quantile(0.99, {}) is None
    assert quantile(0.99, {0.1: 0, float("inf"): 0}) is None


def test_first_frame_uses_averages_since_start() -> None:
    now = Scrape("flights", "u", at=1010.0, samples=parse_metrics(metrics_text(100)))
    view = frame([now, Scrape("hotels", "u", at=1010.0, error="connection refused")])
    flights, hotels = view.rows
    assert flights.processed == 102 and flights.failed == 2 and flights.dlq == 2
    assert flights.rate == pytest.approx(10.2) and flights.rate_window == "avg since start"
    assert flights.lag == 7
    assert flights.p99_s is not None and 0 < flights.p99_s <= 0.01
    assert not hotels.up and hotels.error == "connection refused"
    assert view.dlq_by_reason == {("flights", "invalid_json"): 2}
    assert view.slowest is flights


def test_later_frames_use_the_window() -> None:
    before = Scrape("flights", "u", at=2000.0, samples=parse_metrics(metrics_text(100)))
    after = Scrape("flights", "u", at=2002.0, samples=parse_metrics(metrics_text(110, slow=10)))
    coordinator = Scrape("coordinator", "u", at=2002.0, samples=parse_metrics(coordinator_text()))
    view = frame([after, coordinator], [before])
    flights = view.rows[0]
    assert flights.rate == pytest.approx(5.0) and flights.rate_window == "last 2s"
    assert flights.p99_s is not None and flights.p99_s > 0.05  # only the slow ones in the window
    assert view.sagas_by_state == {"completed": 3, "running": 1}
    console = Console(width=140, record=True)
    console.print(render(view, Settings(metrics_port_base=9400)))
    text = console.export_text()
    assert "flights" in text and "completed" in text and "slowest step: flights" in text


def test_partition_lag_is_clamped_and_starts_at_low_without_commits() -> None:
    assert partition_lag(high=10, low=0, committed=4) == 6
    assert partition_lag(high=10, low=3, committed=-1001) == 7
    assert partition_lag(high=5, low=0, committed=9) == 0  # Tansu's watermark undercounts
