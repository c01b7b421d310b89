"""Start, probe and stop a fresh embedded Tansu broker (memory engine) for one benchmark."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient, NewTopic

from services.runtime.broker import EmbeddedBroker

PORT_RANGE = range(19100, 19200)


def free_port(candidates: Iterable[int] = PORT_RANGE) -> int:
    """Return the first port of ``candidates`` nobody listens on (bind test on 127.0.0.1)."""
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in the benchmark range")


class TansuBroker:
    """One fresh Tansu broker process; empty on every start (memory storage). The process itself
    is the runtime's :class:`EmbeddedBroker`; this adds the benchmark's port range and topics."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self._broker: EmbeddedBroker | None = None

    @property
    def bootstrap(self) -> str:
        assert self.port is not None
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._broker is not None and self._broker.pid is not None
        return self._broker.pid

    def start(self, timeout_s: float = 15.0) -> TansuBroker:
        if self.port is None:
            self.port = free_port()
        self._broker = EmbeddedBroker(
            "127.0.0.1", self.port, startup_timeout_s=timeout_s, env={"RUST_LOG": "warn"}
        )
        self._broker.start(self.log_path or Path(os.devnull))
        return self

    def create_topics(self, names: Iterable[str], partitions: int, timeout_s: float = 10.0) -> None:
        """Create topics explicitly (never rely on auto-creation) and wait until visible."""
        names = list(names)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names],
            operation_timeout=timeout_s,
        )
        for fut in futures.values():
            fut.result(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=2.0)
            if all(n in md.topics and len(md.topics[n].partitions) == partitions for n in names):
                return
            time.sleep(0.1)
        raise TimeoutError(f"topics {names} not visible with {partitions} partitions")

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()

    def __enter__(self) -> TansuBroker:
        return self.start() if self._broker is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
