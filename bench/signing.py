"""``python -m bench.signing [--quick] [--profile] [--json PATH]``: what message signatures cost.

In process, no broker: per message, the runtime's own calls (``itinerant.security.signing``)

- ``sign``: the canonical bytes of the message and the Ed25519 signature (``MeshKeys.sign``);
- ``verify``: the sender's signature checked on a consumed record (``MeshKeys.verify``);
- ``visits``: a routing slip of N signed, chained visits checked (``MeshKeys.verify_visits``),

for payloads of 200 B, 2 kB and 20 kB (the slip carries 4 visits) and chains of 1, 4 and 8
visits, each timed call by call (median and p99, µs). The baseline is a bare
``Ed25519PublicKey.verify`` (and ``Ed25519PrivateKey.sign``) of a message digest, measured in the
same run, interleaved with the cases: every case is timed in rounds, so a busy host slows all of
them alike and the ratios stay meaningful. ``--profile`` runs the verify path under cProfile and
prints where its time goes. ``bench.run`` runs this first and puts it in the report.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.loadgen import percentile
from itinerant.security.keys import ensure_local_keys, keys_dir
from itinerant.security.signing import MeshKeys, message_digest
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, InRecord, OutMessage
from itinerant.wire.slip import Slip, Step

PAYLOADS = (200, 2_000, 20_000)
CHAINS = (1, 4, 8)
AGENTS = [f"hop{i}" for i in range(1, 10)]
SAGA = "bench-saga-0001"
SLIP_VISITS = 4  # visits on the slip of the sign/verify cases (the middle of a 9-step route)


def _slip(keys: MeshKeys, visits: int) -> Slip:
    """A route through ``AGENTS`` after ``visits`` steps, each visit signed and chained."""
    slip = Slip(steps=[Step(agent=a) for a in AGENTS])
    at = datetime(2027, 1, 1, tzinfo=UTC)
    for i in range(visits):
        slip = slip.advanced(AGENTS[i], f"msg-{i}", at + timedelta(milliseconds=i))
        slip = keys.signed_slip(SAGA, slip)
    return slip


def _message(keys: MeshKeys, payload: int, visits: int) -> OutMessage:
    data = json.dumps({"pad": "x" * max(0, payload - 11)}).encode()
    env = Envelope(
        id=f"msg-{visits}",
        type=f"itinerant.{AGENTS[visits]}.run.v1",
        source=f"/itinerant/{AGENTS[visits - 1]}",
        saga_id=SAGA,
        data=data,
        causation_id=f"msg-{visits - 1}",
        slip=_slip(keys, visits),
        budget=Budget(max_hops=20, deadline=datetime(2027, 1, 2, tzinfo=UTC)),
    )
    return env.to_message(f"itinerant.agent.{AGENTS[visits]}")


def _record(message: OutMessage) -> InRecord:
    return InRecord(message.topic, 0, 0, message.key, message.value, list(message.headers))


class Cases:
    """Every timed operation of one run, by name, on keys generated in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        settings = Settings(data_dir=folder, agents=AGENTS)
        ensure_local_keys(keys_dir(settings), AGENTS)
        self.keys = MeshKeys(settings)
        signer = AGENTS[SLIP_VISITS - 1]
        self.ops: dict[str, Callable[[], object]] = {}
        self.info: dict[str, dict[str, Any]] = {}
        for size in PAYLOADS:
            unsigned = _message(self.keys, size, SLIP_VISITS)
            record = _record(self.keys.sign(unsigned, signer))
            assert self.keys.verify(record) == signer
            self._add(f"sign {size} B", "sign", size, SLIP_VISITS, self._signer(unsigned, signer))
            self._add(f"verify {size} B", "verify", size, SLIP_VISITS, self._verifier(record))
        for n in CHAINS:
            slip = _slip(self.keys, n)
            self.keys.verify_visits(SAGA, slip)
            self._add(f"visits x{n}", "visits", None, n, self._chain(slip))
        # The baselines: the bare primitive on a message digest of the 2 kB case.
        digest = message_digest(
            _message(self.keys, 2_000, SLIP_VISITS).header, b"x" * 2_000, signer
        )
        private = self.keys.ring.private(signer)
        public = private.public_key()
        signature = private.sign(digest)
        self._add(
            "bare Ed25519 verify", "baseline", None, None, lambda: public.verify(signature, digest)
        )
        self._add("bare Ed25519 sign", "baseline", None, None, lambda: private.sign(digest))

    def _add(
        self,
        name: str,
        kind: str,
        payload: int | None,
        visits: int | None,
        op: Callable[[], object],
    ) -> None:
        self.ops[name] = op
        self.info[name] = {"kind": kind, "payload_bytes": payload, "visits": visits}

    def _signer(self, message: OutMessage, principal: str) -> Callable[[], object]:
        return lambda: self.keys.sign(message, principal)

    def _verifier(self, record: InRecord) -> Callable[[], object]:
        return lambda: self.keys.verify(record)

    def _chain(self, slip: Slip) -> Callable[[], None]:
        return lambda: self.keys.verify_visits(SAGA, slip)


def measure(quick: bool = False, rounds: int | None = None, per_round: int = 50) -> dict[str, Any]:
    """Time every case call by call, interleaved in rounds; µs per call and ratios."""
    rounds = rounds or (10 if quick else 40)
    with tempfile.TemporaryDirectory(prefix="itinerant-bench-signing-") as tmp:
        cases = Cases(Path(tmp))
        samples: dict[str, list[int]] = {name: [] for name in cases.ops}
        for op in cases.ops.values():  # warm every path (key loads, caches) before timing
            for _ in range(20):
                op()
        t0 = time.monotonic()
        clock = time.perf_counter_ns
        for _ in range(rounds):
            for name, op in cases.ops.items():
                out = samples[name]
                for _ in range(per_round):
                    start = clock()
                    op()
                    out.append(clock() - start)
        wall = time.monotonic() - t0
        info = cases.info
    results: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        us = sorted(v / 1000.0 for v in values)
        results[name] = {
            **info[name],
            "n": len(us),
            "median_us": round(percentile(us, 50), 1),
            "p99_us": round(percentile(us, 99), 1),
        }
    verify_us = results["bare Ed25519 verify"]["median_us"]
    sign_us = results["bare Ed25519 sign"]["median_us"]
    for row in results.values():
        row["x_bare_verify"] = round(row["median_us"] / verify_us, 2)
        if row["kind"] == "sign":
            row["x_bare_sign"] = round(row["median_us"] / sign_us, 2)
        if row["kind"] == "visits":
            per_visit = row["median_us"] / row["visits"]
            row["per_visit_x_bare_verify"] = round(per_visit / verify_us, 2)
    return {
        "rounds": rounds,
        "per_round": per_round,
        "slip_visits": SLIP_VISITS,
        "wall_s": round(wall, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "cases": results,
    }


def profile(iterations: int = 2_000, top: int = 18) -> str:
    """cProfile of the verify path (sender of a 2 kB message, then an 8-visit chain)."""
    with tempfile.TemporaryDirectory(prefix="itinerant-bench-signing-") as tmp:
        cases = Cases(Path(tmp))
        verify, chain = cases.ops["verify 2000 B"], cases.ops["visits x8"]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(iterations):
            verify()
            chain()
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def table(res: dict[str, Any]) -> list[str]:
    """The results as a Markdown table."""
    lines = [
        "| operation | payload | visits | median µs | p99 µs | x bare verify | x bare sign |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in res["cases"].items():
        ratio = row["x_bare_verify"]
        if row["kind"] == "visits":
            ratio_text = f"{ratio} ({row['per_visit_x_bare_verify']} per visit)"
        else:
            ratio_text = str(ratio)
        lines.append(
            f"| {name} | {row['payload_bytes'] or '—'} | {row['visits'] or '—'} | "
            f"{row['median_us']} | {row['p99_us']} | {ratio_text} | {row.get('x_bare_sign', '—')} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.signing", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a few seconds)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the verify path")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    res = measure(args.quick)
    print(
        f"signing micro-benchmark: {res['rounds']} rounds x {res['per_round']} calls per case, "
        f"{res['wall_s']} s; load average {res['loadavg']} on {res['cpus']} CPUs"
    )
    print("\n".join(table(res)))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.profile:
        print(profile())
    return 0


if __name__ == "__main__":
    sys.exit(main())
