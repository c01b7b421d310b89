"""``itinerant up``: the embedded broker, the topics, and every service as its own supervised
process with its own log file; restarted when it dies (with backoff, given up after repeated fast
failures), stopped in order at the end, and stopped by the kernel if `itinerant up` is killed.
One `itinerant up` per data directory (docs/operations.md#supervision)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from itinerant.brokers.acls import service_principal
from itinerant.brokers.broker_security import ADMIN, BrokerSecurity
from itinerant.brokers.client_security import client_security
from itinerant.brokers.connection import parse_bootstrap, require_broker, signal_group
from itinerant.brokers.embedded import RunningBroker, resolve_broker, start_embedded
from itinerant.brokers.secure_mesh import broker_principals, secure_mesh
from itinerant.brokers.topics import ensure_topics, partition_high_watermarks, storage_warnings
from itinerant.errors import NonRetryableError
from itinerant.lifeline import die_with_parent
from itinerant.mesh import load_mesh
from itinerant.observability.rotation import copy_truncate
from itinerant.security import local as local_secrets
from itinerant.settings import Settings, replica_name

from . import scaling
from .replicas import BadReplicas, check_replicas
from .restarts import RestartPolicy

log = logging.getLogger(__name__)

LOCK_FILE = "up.lock"
#: Services without a metrics endpoint of their own.
NO_METRICS = frozenset({"console"})


class AlreadyUp(NonRetryableError):
    """Another `itinerant up` runs on this data directory."""

    reason = "already_up"
    hint = "stop it with `itinerant down`, or give this one its own ITINERANT_DATA_DIR"


class ServiceGaveUp(NonRetryableError):
    """A service kept failing right after each start."""

    reason = "service_failing"


@dataclass
class ServiceProcess:
    name: str
    log_path: Path
    #: The service this process runs (``name`` is ``<service>-<r>`` for replica r > 1).
    service: str
    replica: int = 1
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    last_start: float = 0.0
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    exited_at: float | None = None
    given_up: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Supervisor:
    settings: Settings
    services: list[str] = field(default_factory=list)
    broker: RunningBroker | None = None
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Start the broker ``settings.broker`` names (false: one already runs there, as in tests).
    start_broker: bool | None = None
    warnings: list[str] = field(default_factory=list)
    security: BrokerSecurity | None = None
    #: Processes per service beyond the default one (``up --replicas``; replicas.py).
    replicas: dict[str, int] = field(default_factory=dict)
    _lock: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.settings = load_mesh(self.settings.app).bind(self.settings)
        check_replicas(self.replicas, self.settings)
        if self.start_broker is None:
            self.start_broker = self.settings.embedded
        if not self.services:
            self.services = self.settings.worker_processes()
            if self.settings.gateway_port:
                self.services.append("gateway")
            if self.settings.mcp_port:
                self.services.append("mcp")
            if self.settings.console_port:
                self.services.append("console")
            self.services.extend(load_mesh(self.settings.app).side_servers())

    def _instances(self) -> list[tuple[str, int]]:
        return [(s, r) for s in self.services for r in range(1, self.replicas.get(s, 1) + 1)]

    def planned(self) -> list[str]:
        """The processes :meth:`start` runs: each service, then its other replicas."""
        return [replica_name(s, r) for s, r in self._instances()]

    @property
    def run_dir(self) -> Path:
        return self.settings.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self) -> None:
        """Broker, topics, services. Raises a clear error if any of them cannot start."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._take_data_dir()
        if self.start_broker:
            self.settings, warning = resolve_broker(self.settings)
            if warning:
                log.warning("%s", warning)
                self.warnings.append(warning)
            self.broker = start_embedded(self.settings, self.log_dir, die_with_parent=True)
        if self.settings.embedded_kafka_security == "sasl_ssl":
            self._secure_broker()
        if not self.start_broker:
            require_broker(
                self.settings.kafka_bootstrap_servers,
                self.settings.broker_timeout_s,
                client_security(self.settings),
            )
        ensure_topics(self.settings)
        self.settings = local_secrets.prepare(self.settings, self.services)
        for ready in self.run_dir.glob("*.ready"):
            ready.unlink()
        for service, replica in self._instances():
            self._add(service, replica)
        self.write_run_file()

    def _add(self, service: str, replica: int) -> str:
        name = replica_name(service, replica)
        policy = RestartPolicy(
            healthy_after_s=self.settings.restart_healthy_after_s,
            give_up_after=self.settings.restart_give_up_after,
        )
        proc = ServiceProcess(name, self.log_dir / f"{name}.log", service, replica, policy=policy)
        self.procs[name] = proc
        self._spawn(proc)
        return name

    def scale(self, counts: dict[str, int], grace_s: float = 10.0) -> scaling.ScaleResult:
        """Run ``counts[service]`` processes of each named service from now on: start the
        missing replicas, stop (SIGTERM, then SIGKILL after ``grace_s``) the highest ones beyond
        it. Kafka rebalances the group each time; a stopped replica's unacknowledged records
        go to the others, which handle them once (the shared inbox). Raises ``BadReplicas``."""
        wanted = {**self.replicas, **counts}
        check_replicas(wanted, self.settings)
        unknown = sorted(set(counts) - set(self.services))
        if unknown:
            raise BadReplicas(f"{', '.join(unknown)} is not running under this `itinerant up`")
        started: list[str] = []
        stopped: list[ServiceProcess] = []
        for service, count in counts.items():
            have = self.replicas.get(service, 1)
            started += [self._add(service, r) for r in range(have + 1, count + 1)]
            surplus = range(count + 1, have + 1)
            stopped += [self.procs.pop(replica_name(service, r)) for r in surplus]
            self.replicas[service] = count
        self.replicas = {s: n for s, n in self.replicas.items() if n > 1}
        _terminate(stopped, grace_s)
        for proc in stopped:
            (self.run_dir / f"{proc.name}.ready").unlink(missing_ok=True)
        self.write_run_file()
        if started or stopped:
            log.warning(
                "replicas now %s: started %s, stopped %s",
                self.replicas or "one per service",
                started or "none",
                [p.name for p in stopped] or "none",
            )
        return scaling.ScaleResult("", started, [p.name for p in stopped])

    def apply_scale_request(self) -> scaling.ScaleResult | None:
        """The request `itinerant scale` left in the run directory, applied and answered."""
        request = scaling.take_request(self.run_dir)
        if request is None:
            return None
        try:
            if not request.replicas:
                raise BadReplicas("the scale request names no NAME=COUNT")
            done = self.scale(request.replicas)
            result = scaling.ScaleResult(request.id, done.started, done.stopped)
        except BadReplicas as exc:
            result = scaling.ScaleResult(request.id, error=exc.describe())
        scaling.write_result(self.run_dir, result)
        return result

    def _take_data_dir(self) -> None:
        """Hold ``run/up.lock`` (an exclusive lock the kernel drops when this process dies, even
        by SIGKILL) for as long as this supervisor runs; refuse when another one holds it."""
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyUp(
                f"another `itinerant up` (pid {holder}) runs on {self.settings.data_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def _release_data_dir(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing drops the lock
            self._lock = None

    def _secure_broker(self) -> None:
        """The local secure broker (ITINERANT_EMBEDDED_KAFKA_SECURITY): we act as its admin,
        make every principal's user and the mesh's ACLs; each service gets its own login."""
        host, _port = parse_bootstrap(self.settings.kafka_bootstrap_servers)
        self.security = BrokerSecurity.for_settings(self.settings, host)
        self.security.ensure(broker_principals(self.settings))
        self.settings = self.security.login(self.settings, ADMIN)
        secure_mesh(self.settings, self.security, load_mesh(self.settings.app))

    def _spawn(self, proc: ServiceProcess) -> None:
        env = {**os.environ, **self.settings.to_env(), **self.extra_env}
        env[Settings.env_name("replica")] = str(proc.replica)
        if self.security is not None:  # this service's own broker login, not the admin's
            # the console acts for operators: it connects as ITINERANT_OPERATOR
            login = self.settings.operator if proc.service == "console" else proc.service
            env.update(self.security.login_env(service_principal(login)))
        with proc.log_path.open("ab") as out:
            proc.process = subprocess.Popen(
                [sys.executable, "-m", "itinerant.cli.main", "worker", proc.service],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
                preexec_fn=die_with_parent(),  # and they stop if we are killed
            )
        proc.last_start = time.monotonic()
        proc.exited_at = None

    def write_run_file(self) -> None:
        info = {
            "supervisor_pid": os.getpid(),
            "bootstrap": self.settings.kafka_bootstrap_servers,
            "broker_pid": self.broker.pid if self.broker else None,
            "services": {n: p.pid for n, p in self.procs.items()},
            "replicas": self.replicas,
            "metrics": {
                n: self.settings.metrics_port(p.service, p.replica)
                for n, p in self.procs.items()
                if p.service not in NO_METRICS
            },
            "logs": str(self.log_dir),
        }
        (self.run_dir / "up.json").write_text(json.dumps(info, indent=2))

    def ready(self) -> list[str]:
        return [n for n in self.procs if (self.run_dir / f"{n}.ready").exists()]

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervise_once()
            self.raise_if_given_up()
            if len(self.ready()) == len(self.procs):
                return
            time.sleep(0.1)
        missing = sorted(set(self.procs) - set(self.ready()))
        raise TimeoutError(
            f"services not ready after {timeout_s:.0f}s: {missing}; "
            f"see their logs in {self.log_dir}"
        )

    def supervise_once(self) -> list[str]:
        """Restart any service that died, after its backoff (restarts.py); returns the names
        restarted. A service that failed too often right after starting is left stopped and
        reported by :meth:`given_up`."""
        self.apply_scale_request()
        restarted = []
        now = time.monotonic()
        for proc in self.procs.values():
            if proc.alive() or proc.process is None or proc.given_up:
                continue
            code = proc.process.returncode
            if proc.exited_at is None:
                proc.exited_at = now
                proc.policy.exited(now - proc.last_start)
                if proc.policy.given_up:
                    proc.given_up = True
                    log.error(
                        "%s exited with %s, %d times in a row within %.0fs of starting; not "
                        "restarting it (see %s)",
                        proc.name,
                        code,
                        proc.policy.failures,
                        proc.policy.healthy_after_s,
                        proc.log_path,
                    )
                    continue
            if now - proc.exited_at < proc.policy.delay_s:
                continue
            log.warning("%s exited with %s; restarting (see %s)", proc.name, code, proc.log_path)
            proc.restarts += 1
            self._spawn(proc)
            restarted.append(proc.name)
        if restarted:
            self.write_run_file()
        return restarted

    def given_up(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.given_up]

    def raise_if_given_up(self) -> None:
        failing = self.given_up()
        if not failing:
            return
        logs = ", ".join(str(self.procs[n].log_path) for n in failing)
        tail = _tail(self.procs[failing[0]].log_path)
        raise ServiceGaveUp(
            f"{', '.join(failing)} kept failing right after starting and was not restarted "
            f"again; its last lines:\n{tail}",
            hint=f"fix the cause (see {logs}), then `itinerant up` again",
        )

    def rotate_logs(self) -> list[Path]:
        """Rotate the services' and the broker's logs past ITINERANT_LOG_MAX_BYTES (copy, then
        truncate: the writers hold them open in append mode). Returns the logs rotated."""
        paths = [p.log_path for p in self.procs.values()] + [self.log_dir / "broker.log"]
        done = []
        for path in paths:
            try:
                if copy_truncate(path, self.settings.log_max_bytes, self.settings.log_keep):
                    done.append(path)
            except OSError as exc:  # a full disk must not stop the supervisor
                log.warning("could not rotate %s: %s", path, exc)
        return done

    def storage_report(self) -> list[str]:
        if self.settings.broker != "tansu":
            return []  # Kafka deletes by retention; only Tansu keeps (and slows with) everything
        try:
            return storage_warnings(partition_high_watermarks(self.settings))
        except Exception as exc:  # a report must never stop the supervisor
            return [f"could not read partition sizes: {exc}"]

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every service, wait, SIGKILL stragglers; then the broker."""
        _terminate(list(self.procs.values()), grace_s)
        if self.broker is not None:
            self.broker.stop()
        if self._lock is not None:  # the run file is ours only while we hold the data dir
            (self.run_dir / "up.json").unlink(missing_ok=True)
        self._release_data_dir()

    def kill(self, name: str) -> int | None:
        """SIGKILL one service (chaos tests); the next ``supervise_once`` restarts it (a kill
        asked for here does not count towards giving up)."""
        proc = self.procs[name]
        if proc.process is None or not proc.alive():
            return None
        pid = proc.process.pid
        signal_group(proc.process, signal.SIGKILL)
        proc.process.wait(timeout=5)
        proc.exited_at = time.monotonic()  # a kill we asked for, not a failure of the service
        return pid


def _terminate(procs: list[ServiceProcess], grace_s: float) -> None:
    """SIGTERM each process, wait up to ``grace_s`` in all, SIGKILL stragglers."""
    for proc in procs:
        if proc.alive() and proc.process:
            signal_group(proc.process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        if proc.process is None:
            continue
        try:
            proc.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            signal_group(proc.process, signal.SIGKILL)
            proc.process.wait(timeout=5)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
