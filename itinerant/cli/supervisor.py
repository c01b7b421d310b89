"""``itinerant up``: the embedded broker, the topics, and every service as its own supervised
process with its own log file; restarted when it dies, stopped in order at the end."""

from __future__ import annotations

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
from itinerant.mesh import load_mesh
from itinerant.security import local as local_secrets
from itinerant.settings import Settings

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


@dataclass
class ServiceProcess:
    name: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    last_start: float = 0.0

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

    def __post_init__(self) -> None:
        self.settings = load_mesh(self.settings.app).bind(self.settings)
        if self.start_broker is None:
            self.start_broker = self.settings.embedded
        if not self.services:
            self.services = self.settings.worker_processes()
            if self.settings.gateway_port:
                self.services.append("gateway")

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
        if self.start_broker:
            self.settings, warning = resolve_broker(self.settings)
            if warning:
                log.warning("%s", warning)
                self.warnings.append(warning)
            self.broker = start_embedded(self.settings, self.log_dir)
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
        for name in self.services:
            proc = ServiceProcess(name, self.log_dir / f"{name}.log")
            self.procs[name] = proc
            self._spawn(proc)
        self.write_run_file()

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
        if self.security is not None:  # this service's own broker login, not the admin's
            env.update(self.security.login_env(service_principal(proc.name)))
        with proc.log_path.open("ab") as out:
            proc.process = subprocess.Popen(
                [sys.executable, "-m", "itinerant.cli.main", "worker", proc.name],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
            )
        proc.last_start = time.monotonic()

    def write_run_file(self) -> None:
        info = {
            "supervisor_pid": os.getpid(),
            "bootstrap": self.settings.kafka_bootstrap_servers,
            "broker_pid": self.broker.pid if self.broker else None,
            "services": {n: p.pid for n, p in self.procs.items()},
            "metrics": {n: self.settings.metrics_port(n) for n in self.procs},
            "logs": str(self.log_dir),
        }
        (self.run_dir / "up.json").write_text(json.dumps(info, indent=2))

    def ready(self) -> list[str]:
        return [n for n in self.procs if (self.run_dir / f"{n}.ready").exists()]

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.supervise_once()
            if len(self.ready()) == len(self.procs):
                return
            time.sleep(0.1)
        missing = sorted(set(self.procs) - set(self.ready()))
        raise TimeoutError(
            f"services not ready after {timeout_s:.0f}s: {missing}; "
            f"see their logs in {self.log_dir}"
        )

    def supervise_once(self) -> list[str]:
        """Restart any service that died (with backoff); returns the names restarted."""
        restarted = []
        for proc in self.procs.values():
            if proc.alive() or proc.process is None:
                continue
            delay = RESTART_BACKOFF_S[min(proc.restarts, len(RESTART_BACKOFF_S) - 1)]
            if time.monotonic() - proc.last_start < delay:
                continue
            code = proc.process.returncode
            log.warning("%s exited with %s; restarting (see %s)", proc.name, code, proc.log_path)
            proc.restarts += 1
            self._spawn(proc)
            restarted.append(proc.name)
        if restarted:
            self.write_run_file()
        return restarted

    def storage_report(self) -> list[str]:
        if self.settings.broker != "tansu":
            return []  # Kafka deletes by retention; only Tansu keeps (and slows with) everything
        try:
            return storage_warnings(partition_high_watermarks(self.settings))
        except Exception as exc:  # a report must never stop the supervisor
            return [f"could not read partition sizes: {exc}"]

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every service, wait, SIGKILL stragglers; then the broker."""
        for proc in self.procs.values():
            if proc.alive() and proc.process:
                signal_group(proc.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            if proc.process is None:
                continue
            try:
                proc.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                signal_group(proc.process, signal.SIGKILL)
                proc.process.wait(timeout=5)
        if self.broker is not None:
            self.broker.stop()
        (self.run_dir / "up.json").unlink(missing_ok=True)

    def kill(self, name: str) -> int | None:
        """SIGKILL one service (chaos tests); the next ``supervise_once`` restarts it."""
        proc = self.procs[name]
        if proc.process is None or not proc.alive():
            return None
        pid = proc.process.pid
        signal_group(proc.process, signal.SIGKILL)
        proc.process.wait(timeout=5)
        return pid
