"""Issue 7's measurement: publish->result latency of the trip flow with the flights and hotels
searches in parallel (a scatter-gather group) against one after the other, same broker, same load.

    .venv/bin/python -m bench.parallel_vs_sequential [--sagas 40] [--rate 5] [--broker kafka|tansu]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from itinerant.cli.kafka_io import publish_many, wait_for_results
from itinerant.cli.supervisor import Supervisor
from itinerant.settings import Settings
from services.contracts.trip import TripRequest
from services.samples import load_trips

from .brokers import KINDS, free_port, make_broker


def trips(count: int) -> list[TripRequest]:
    return list(load_trips(count))


def measure(
    bootstrap: str, workdir: Path, parallel: bool, count: int, rate: float, broker: str = "kafka"
) -> list[float]:
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        broker=broker,
        topic_prefix=f"pvs{uuid.uuid4().hex[:6]}.",
        data_dir=workdir / ("parallel" if parallel else "sequential"),
        partitions=3,
        metrics_port_base=0,
        coordinator_http_port=free_port(),
        gateway_port=0,
    )
    # ITINERANT_PARALLEL_SEARCH is the travel mesh's own setting: the services read it.
    supervisor = Supervisor(
        settings,
        start_broker=False,
        extra_env={"ITINERANT_PARALLEL_SEARCH": "true" if parallel else "false"},
    )
    supervisor.start()
    try:
        supervisor.wait_ready(90)
        warm = trips(3)
        publish_many(settings, warm)
        wait_for_results(settings, {t.request_id or "" for t in warm}, 60)
        latencies = []
        for request in trips(count):  # open loop at a fixed, low rate: latency, not throughput
            sent = publish_many(settings, [request])
            saga = request.request_id or ""
            result = wait_for_results(settings, {saga}, 30)
            if saga in result:
                latencies.append((time.time() - sent[saga]) * 1000)
            time.sleep(max(0.0, 1 / rate - (time.time() - sent[saga])))
        return latencies
    finally:
        supervisor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=40)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--broker", choices=KINDS, default="kafka")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="itinerant-pvs-"))
    broker = make_broker(args.broker, log_path=workdir / f"{args.broker}.log").start()
    try:
        for parallel in (True, False):
            got = sorted(
                measure(broker.bootstrap, workdir, parallel, args.sagas, args.rate, args.broker)
            )
            label = "parallel  " if parallel else "sequential"
            p99 = got[min(len(got) - 1, int(len(got) * 0.99))]
            print(
                f"{label}: {len(got)} sagas, publish->result p50 {statistics.median(got):.0f} ms, "
                f"p90 {got[int(len(got) * 0.9)]:.0f} ms, p99 {p99:.0f} ms"
            )
    finally:
        gc.collect()
        broker.stop()


if __name__ == "__main__":
    main()
