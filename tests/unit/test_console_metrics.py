"""The console's agents figures and chart ring (itinerant/console/metrics.py), from scraped
metrics derived by itinerant/observability/service_metrics.py."""

from __future__ import annotations

from itinerant.console.metrics import Ring, Sampler, point_of
from itinerant.observability.service_metrics import Scrape, frame, parse_metrics


def agent_text(processed: int, circuit: int = 0) -> str:
    return f"""
# TYPE itinerant_messages_processed_total counter
itinerant_messages_processed_total{{service="search",topic="t.search",outcome="ok"}} {processed}
# TYPE itinerant_circuit_breaker_state gauge
itinerant_circuit_breaker_state{{service="search",dependency="inventory"}} {circuit}
itinerant_circuit_breaker_state{{service="search",dependency="llm"}} 0
# TYPE itinerant_consumer_lag_messages gauge
itinerant_consumer_lag_messages{{service="search",topic="t.search"}} 3
# TYPE itinerant_processing_seconds histogram
itinerant_processing_seconds_bucket{{service="search",topic="t.search",le="0.1"}} {processed}
itinerant_processing_seconds_bucket{{service="search",topic="t.search",le="+Inf"}} {processed}
"""


def scrape_of(service: str, at: float, text: str) -> Scrape:
    return Scrape(service, "http://x/metrics", at, parse_metrics(text))


def test_circuit_states_are_named_per_dependency() -> None:
    view = frame([scrape_of("search", 10.0, agent_text(5, circuit=2))])
    (row,) = view.rows
    assert row.circuits == {"inventory": "open", "llm": "closed"}
    half = frame([scrape_of("search", 10.0, agent_text(5, circuit=1))])
    assert half.rows[0].circuits["inventory"] == "half_open"


def test_a_point_holds_the_dashboard_panels() -> None:
    before = [scrape_of("search", 10.0, agent_text(10))]
    now = [
        scrape_of("search", 15.0, agent_text(60)),
        Scrape("coordinator", "http://y/metrics", 15.0, error="refused"),
    ]
    point = point_of(frame(now, before))
    assert point.values["throughput"] == {"search": 10.0}  # 50 messages in 5 s
    assert point.values["lag"] == {"search": 3.0}
    assert 0 < point.values["p99"]["search"] <= 100.0  # ms
    assert "coordinator" not in point.values["dead_letters"]  # down: no figure, a gap


def test_the_ring_keeps_the_latest_points_and_serves_series() -> None:
    ring = Ring(keep=3)
    previous: list[Scrape] | None = None
    for i in range(5):
        current = [
            scrape_of("search", 10.0 + 5 * i, agent_text(10 * (i + 1) ** 2)),
            scrape_of("coordinator", 10.0 + 5 * i, 'itinerant_sagas{state="completed"} 4\n'),
        ]
        ring.add(point_of(frame(current, previous)))
        previous = current
    assert len(ring.points) == 3
    charts = {c["name"]: c for c in ring.series()}
    assert set(charts) == {"throughput", "p99", "lag", "dead_letters", "sagas"}
    by_service = {s["name"]: s for s in charts["throughput"]["series"]}
    assert set(by_service) == {"search", "coordinator"}
    throughput = by_service["search"]
    # the last three windows: (90-40)/5, (160-90)/5, (250-160)/5
    assert [v for _, v in throughput["points"]] == [10.0, 14.0, 18.0]
    times = [t for t, _ in throughput["points"]]
    assert times == sorted(times)
    (completed,) = charts["sagas"]["series"]
    assert completed["name"] == "completed" and completed["points"][-1][1] == 4.0


def test_the_sampler_rates_over_the_window_since_its_previous_sample() -> None:
    answers = iter(
        [[scrape_of("search", 0.0, agent_text(0))], [scrape_of("search", 2.0, agent_text(8))]]
    )
    sampler = Sampler(lambda: next(answers), every_s=2.0, keep_s=60.0)
    sampler.sample()
    second = sampler.sample()
    assert second.rows[0].rate == 4.0
    assert sampler.latest is second
    assert len(sampler.ring.points) == 2
