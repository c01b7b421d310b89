"""The runtime's own CPU per hop, in process: ``python -m bench.hop_micro [--sagas 200]
[--rounds 5] [--profile]``.

The demo flow's real processors and coordinator wired together in one process
(``itinerant.testing.InMemoryMesh``: records routed by topic instead of through Kafka), so what is
timed is the runtime's work on a record (decoding, signature checks, inbox and outbox in SQLite,
slip and budget, pydantic validation, spans, metrics, the outputs) without the broker, Faust or
the network, and without the noise of a shared host's scheduling: CPU time (``process_time``) per
delivered record, the median of ``--rounds`` rounds of ``--sagas`` sagas each. ``--profile``
prints the top functions by cumulative time (cProfile) of one more round. A figure to compare one
change with the one before, on one host; the broker scenarios of ``bench.run`` are the ones the
targets are about.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from itinerant.settings import Settings
from itinerant.testing import InMemoryMesh
from services.samples import load_trips


async def _round(workdir: Path, sagas: int) -> tuple[float, int, int]:
    """(CPU seconds, records delivered, sagas completed) of ``sagas`` sagas on a fresh mesh."""
    settings = Settings(data_dir=workdir, metrics_port_base=0, coordinator_http_port=0)
    mesh = InMemoryMesh(settings)
    try:
        ids = [mesh.publish_request(trip) for trip in load_trips(sagas)]
        t0 = time.process_time()
        steps = await mesh.run(max_steps=1_000_000)
        cpu = time.process_time() - t0
        done = sum(
            1 for saga_id in ids if mesh.results().get(saga_id, {}).get("status") == "completed"
        )
        return cpu, steps, done
    finally:
        for store in mesh.stores.values():
            store.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hop_micro", description=__doc__)
    ap.add_argument("--sagas", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    per_record: list[float] = []
    per_saga: list[float] = []
    with tempfile.TemporaryDirectory(prefix="itinerant-hop-") as tmp:
        asyncio.run(_round(Path(tmp) / "warm", 10))
        for i in range(args.rounds):
            cpu, steps, done = asyncio.run(_round(Path(tmp) / f"r{i}", args.sagas))
            if done != args.sagas:
                print(f"round {i}: only {done}/{args.sagas} sagas completed", file=sys.stderr)
                return 1
            per_record.append(cpu / steps * 1000)
            per_saga.append(cpu / args.sagas * 1000)
            print(
                f"round {i}: {steps} records, {cpu:.2f} CPU s, {per_record[-1]:.3f} ms/record, "
                f"{per_saga[-1]:.2f} ms/saga"
            )
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(_round(Path(tmp) / "prof", args.sagas))
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    print(
        f"median {statistics.median(per_record):.3f} ms CPU per record "
        f"(min {min(per_record):.3f}, max {max(per_record):.3f}; {args.rounds} rounds of "
        f"{args.sagas} sagas); median {statistics.median(per_saga):.2f} ms CPU per saga"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
