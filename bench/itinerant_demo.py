"""Scenario 4: the demo flow end to end, coordinator included, as ``itinerant up`` runs it.

``itinerant.cli.supervisor.Supervisor`` starts the coordinator and the five demo agents (planner,
flights, hotels, validator, notifier), each its own process, against the harness's broker
(``start_broker=False``, with ``broker`` set to the harness's kind, which the services tune
themselves for) with a fresh topic prefix and the deterministic LLM provider. Sagas enter as
CloudEvents ``itinerant.request.v1`` on the requests topic; the intended send time is kept
client-side, keyed by saga id (= ``request_id``), and a saga ends when its result (keyed by saga
id) appears on the results topic. Units are sagas, not messages.

Message signatures are required (``itinerant up`` generates the keys); ``signing="off"`` runs the
same flow with ``ITINERANT_MESSAGE_SIGNING=off`` in every service's environment, for the on/off
comparison. A saga makes :data:`AGENT_STEPS` agent steps (the trip flow of services/flows.py) plus
the coordinator's work.

After the load phases, ``after`` measures the coordinator's restart: kill -9, restart through the
supervisor, and time a saga published right after the kill against sagas published normally.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from bench.harness import BenchConfig, PhaseContext
from bench.itinerant_noop import free_block
from bench.loadgen import Encoded, _send, new_run_id
from bench.scenario import ChainTopics
from itinerant.cli.supervisor import Supervisor
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope
from services.contracts.trip import Traveller, TripRequest
from services.inventory import catalogue

AGENTS = ["planner", "flights", "hotels", "validator", "notifier"]
#: Agent steps of one saga of the trip flow: plan, search flights and hotels, validate, book
#: flights and hotels, notify (a skipped step still reaches its agent).
AGENT_STEPS = 7


class SagaCodec:
    """Entry: a valid trip request per saga; exit: its result, matched by saga id.

    Trips are spread over every route of the catalogue and a year of dates, so thousands of
    sagas never sell a flight or a hotel out (which would turn the run into compensations).
    """

    def __init__(self) -> None:
        flights = catalogue().flights.values()
        self._routes = [(f.origin, f.destination) for f in flights]
        self._pending: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self.statuses: dict[str, int] = {}
        self._n = 0

    def request(self, saga_id: str) -> TripRequest:
        with self._lock:
            i = self._n
            self._n += 1
        origin, destination = self._routes[i % len(self._routes)]
        depart = date(2027, 1, 1) + timedelta(days=(i // len(self._routes)) % 360)
        return TripRequest(
            request_id=saga_id,
            traveller=Traveller(name=f"Bench {i}"),
            origin=origin,
            destination=destination,
            depart_date=depart,
            return_date=depart + timedelta(days=2),
            travellers=1,
        )

    def encode(self, run: str, seq: int, intended_ns: int) -> Encoded:
        saga_id = f"{run}-{seq}"
        envelope = Envelope(
            id=f"req-{saga_id}",
            type="itinerant.request.v1",
            source="/bench/loadgen",
            saga_id=saga_id,
            data=self.request(saga_id).model_dump_json(exclude_none=True).encode(),
        )
        with self._lock:
            self._pending[saga_id] = (run, intended_ns)
        return saga_id.encode(), envelope.data, envelope.headers()

    def decode(self, msg: Any) -> tuple[str, int] | None:
        key = msg.key()
        if not key:
            return None
        with self._lock:
            got = self._pending.pop(key.decode(), None)
        if got is None:
            return None
        try:
            result = json.loads(msg.value())
            status = str(result.get("status"))
            if result.get("reason"):
                status += f":{result['reason']}"
        except ValueError:
            status = "undecodable"
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return got


class ItinerantDemo:
    unit = "saga"
    ready_timeout_s = 90.0
    broker = "kafka"  # set by the harness; the services tune themselves for it

    hops = AGENT_STEPS
    compare_rate = 3.0  # sagas/s both halves of the signatures on/off pair run at

    def __init__(
        self,
        quick: bool = False,
        layout: str = "process-per-service",
        signing: str = "required",
        replicas: dict[str, int] | None = None,
        guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once",
    ) -> None:
        self.layout = layout
        self.guarantee = guarantee
        self.signing = signing
        self.replicas = dict(replicas or {})
        self.pair: str | None = None
        if layout == "shared":
            self.name = "itinerant_demo_shared"
            self.title = "S4b Itinerant demo flow (coordinator + 5 agents in 1 worker, 2 workers)"
            self.slot: str | None = "s4b"
        else:
            self.name = "itinerant_demo"
            self.title = "S4 Itinerant demo flow (coordinator + 5 agents, 6 workers)"
            self.slot = "s4"
            self.pair = "s4"
        if signing != "required":
            self.name += "_unsigned"
            self.title += ", signatures off"
            self.slot = None
        if self.replicas:
            self.name += "_" + "_".join(f"{n}_x{c}" for n, c in sorted(self.replicas.items()))
            self.title += ", " + ", ".join(
                f"{c} {n} replicas" for n, c in sorted(self.replicas.items())
            )
            self.slot = None
            self.pair = None
        if guarantee != "at_least_once":
            self.name += f"_{guarantee}"
            self.title += f", {guarantee.replace('_', '-')} (Kafka transactions)"
            self.slot = None
            self.pair = None
        self.quick = quick
        self.codec = SagaCodec()
        self.supervisor: Supervisor | None = None
        self.settings: Settings | None = None
        self.prefix = ""

    def configure(self, cfg: BenchConfig) -> BenchConfig:
        # Sagas are slow and each leaves ~12 records on the broker (Tansu keeps them all and
        # slows down with them): short, few phases; 50 sagas/s fixed (the latency target) plus
        # 25% and 50% of saturation.
        if cfg.quick:
            return dataclasses.replace(
                cfg,
                fixed_loads=(50.0, self.compare_rate),
                load_fractions=(0.25, 0.5),
                load_duration_s=3.0,
                saturation_target_s=2.0,
                saturation_pilot=60,
                saturation_bounds=(60, 400),
                idle_s=2.0,
            )
        return dataclasses.replace(
            cfg,
            fixed_loads=(50.0, self.compare_rate),
            load_fractions=(0.25, 0.5),
            load_duration_s=8.0,
            saturation_target_s=5.0,
            saturation_pilot=100,
            saturation_bounds=(200, 1500),
        )

    def topics(self, prefix: str, partitions: int) -> ChainTopics:
        self.prefix = f"{prefix}."
        t = self._settings_shell(partitions)
        return ChainTopics(
            (t.requests_topic, t.results_topic),
            partitions,
            extra=(t.events_topic, t.dlq_topic, *(t.agent_topic(a) for a in AGENTS)),
        )

    def _settings_shell(self, partitions: int) -> Settings:
        return Settings(topic_prefix=self.prefix, partitions=partitions, agents=AGENTS)

    def start(self, bootstrap: str, topics: ChainTopics, workdir: Path) -> None:
        metrics_base = free_block(len(AGENTS) + 1)
        http_port = free_block(1, taken=set(range(metrics_base, metrics_base + len(AGENTS) + 1)))
        if self.replicas:  # replica r would serve metrics 100 ports up, outside the bench's range
            metrics_base = 0  # (nothing scrapes them here; an unscraped endpoint costs no CPU)
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap,
            broker=self.broker,
            topic_prefix=self.prefix,
            partitions=topics.partitions,
            data_dir=workdir / f"data-{self.prefix.strip('.')}",
            agents=AGENTS,
            metrics_port_base=metrics_base,
            coordinator_http_port=http_port,
            llm_provider="deterministic",
            log_level="INFO",
            layout=self.layout,
            gateway_port=0,
            message_signing=self.signing,
            processing_guarantee=self.guarantee,
        )
        self.supervisor = Supervisor(self.settings, start_broker=False, replicas=self.replicas)
        self.supervisor.start()
        self.supervisor.wait_ready(self.ready_timeout_s)

    def processes(self) -> dict[str, int]:
        assert self.supervisor is not None
        dead = [n for n, p in self.supervisor.procs.items() if not p.alive()]
        if dead:
            raise RuntimeError(f"services exited: {dead} (logs in {self.supervisor.log_dir})")
        return {n: p.pid for n, p in self.supervisor.procs.items() if p.pid is not None}

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None

    # -- restart of the coordinator ------------------------------------------------------------

    def _one_saga(self, ctx: PhaseContext, timeout_s: float, during: Any = None) -> float | None:
        """Publish one saga, wait for its result; seconds from publish to result (None: lost)."""
        run = new_run_id("restart")
        t0 = time.monotonic_ns()
        _send(ctx.producer, ctx.topics.entry, run, 0, t0, ctx.codec)
        ctx.producer.flush(5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if during is not None:
                during()
            got = ctx.sink.wait(run, 1, 0.05)
            if got.received:
                return (got.received[0] - t0) / 1e9
        return None

    def after(self, ctx: PhaseContext) -> dict[str, Any]:
        assert self.supervisor is not None
        if ctx.cfg.quick:  # the restart costs ~20 s: full run only
            return {"result_statuses": dict(self.codec.statuses)}
        sup = self.supervisor
        normal = [self._one_saga(ctx, 10.0) for _ in range(5)]
        normal_ok = [x for x in normal if x is not None]
        ready = sup.run_dir / "coordinator.ready"
        t_kill = time.monotonic()
        sup.kill("coordinator")
        ready.unlink(missing_ok=True)
        restarted_at: list[float] = []
        ready_at: list[float] = []

        def tend() -> None:
            if sup.supervise_once():
                restarted_at.append(time.monotonic())
            if not ready_at and ready.exists():
                ready_at.append(time.monotonic())

        resumed = self._one_saga(ctx, 60.0, during=tend)
        for _ in range(100):  # let the restart's ready file appear if the saga beat it
            if ready_at:
                break
            tend()
            time.sleep(0.05)
        after_restart = [self._one_saga(ctx, 20.0) for _ in range(3)]
        res = {
            "normal_saga_s": [round(x, 3) for x in normal_ok],
            "normal_saga_p50_s": round(statistics.median(normal_ok), 3) if normal_ok else None,
            "kill_to_respawn_s": round(restarted_at[0] - t_kill, 3) if restarted_at else None,
            "kill_to_ready_s": round(ready_at[0] - t_kill, 3) if ready_at else None,
            "saga_after_kill_s": round(resumed, 3) if resumed is not None else None,
            "sagas_after_restart_s": [round(x, 3) if x else None for x in after_restart],
            "result_statuses": dict(self.codec.statuses),
        }
        ctx.log(
            f"  coordinator kill -9: saga published right after the kill done in "
            f"{res['saga_after_kill_s']} s (normal {res['normal_saga_p50_s']} s); "
            f"respawn {res['kill_to_respawn_s']} s, ready {res['kill_to_ready_s']} s"
        )
        return res


#: The busiest process of the demo flow (a third of the CPU at saturation), scaled out: the
#: "1 vs 3 replicas" figure (docs/benchmarks.md).
BUSIEST_X3 = {"coordinator": 3}


def scenarios(quick: bool) -> list[Any]:
    return [
        ItinerantDemo(quick),
        ItinerantDemo(quick, layout="shared"),
        ItinerantDemo(quick, replicas=BUSIEST_X3),
        ItinerantDemo(quick, guarantee="exactly_once"),
    ]
