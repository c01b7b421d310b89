"""Talking to any Kafka: bootstrap addresses, reachability (a metadata answer, not an open port),
quiet short-lived admin clients, and the errors of the brokers we start ourselves."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from itinerant.errors import BrokerUnavailable, NonRetryableError

DEFAULT_KAFKA_PORT = 9092

_log = logging.getLogger(__name__)


class EmbeddedBrokerError(NonRetryableError):
    """The embedded broker could not be started (or found)."""

    reason = "embedded_broker_error"


class BrokerRefusedLogin(NonRetryableError):
    """The broker answered but refused our credentials or TLS handshake."""

    reason = "broker_refused_login"
    hint = (
        "check KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and "
        "KAFKA_SASL_PASSWORD (and KAFKA_SSL_CA_FILE for TLS); see docs/security.md#the-broker"
    )


#: librdkafka errors that mean "answered, but refused us" rather than "not there".
_LOGIN_ERRORS = {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED}


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


def probe_broker(
    bootstrap: str, timeout_s: float, security: Mapping[str, Any] | None = None
) -> tuple[bool, str | None]:
    """(answered, refusal): whether a broker at ``bootstrap`` answers a metadata request within
    ``timeout_s`` (with the ``security`` properties), and, when it refused our login or TLS
    handshake, librdkafka's words for it.

    A refused connection returns at once (TCP pre-check); anything else that does not answer
    returns after about ``timeout_s``.
    """
    try:
        addresses = _all_bootstrap(bootstrap)
    except ValueError:
        return False, None
    started = time.monotonic()
    probe = min(0.5, timeout_s)
    if not any(port_open(host, port, probe) for host, port in addresses):
        return False, None
    remaining = max(0.1, timeout_s - (time.monotonic() - started))
    refusals: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() in _LOGIN_ERRORS:
            refusals.append(err.str())

    config = quiet_client_config(bootstrap, remaining)
    config.update(security or {})
    config["error_cb"] = on_error
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=remaining)
    except KafkaException as exc:
        admin.poll(0.1)  # serve the error callbacks librdkafka queued meanwhile
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.code() in _LOGIN_ERRORS:
            refusals.append(error.str())
        return False, refusals[0] if refusals else None
    return bool(metadata.brokers), None


def broker_reachable(
    bootstrap: str, timeout_s: float, security: Mapping[str, Any] | None = None
) -> bool:
    """True if a Kafka broker at ``bootstrap`` answers a metadata request within ``timeout_s``."""
    return probe_broker(bootstrap, timeout_s, security)[0]


def require_broker(
    bootstrap: str, timeout_s: float, security: Mapping[str, Any] | None = None
) -> None:
    """Raise :class:`BrokerUnavailable` unless a broker at ``bootstrap`` answers in time, or
    :class:`BrokerRefusedLogin` when it refused our credentials or TLS handshake."""
    answered, refusal = probe_broker(bootstrap, timeout_s, security)
    if refusal is not None:
        raise BrokerRefusedLogin(f"the Kafka broker at {bootstrap} refused us: {refusal}")
    if not answered:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {bootstrap} within {timeout_s:g}s; start it with "
            "`itinerant up` or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
        )


def tail_of(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group of ``proc`` (our brokers run in their own session)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - group gone and pid reused
        proc.send_signal(sig)


def terminate_group(proc: subprocess.Popen[bytes], grace_s: float, what: str) -> int:
    """SIGTERM ``proc``'s group, SIGKILL it after ``grace_s``; its exit code."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _log.warning("%s (pid %s) ignored SIGTERM for %gs; killing it", what, proc.pid, grace_s)
            signal_group(proc, signal.SIGKILL)
            proc.wait()
    return int(proc.returncode)
