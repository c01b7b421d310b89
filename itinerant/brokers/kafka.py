"""The embedded Apache Kafka: KRaft nodes on loopback, run from the jars `make install` fetched.

One :class:`KafkaNode` is one JVM acting as broker and controller. :class:`KafkaCluster` starts
``n`` of them as one cluster (every node a voter of the controller quorum), which the fault tests
use with replication factor 3. Storage is formatted once and kept: what was published before a
stop is there after the next start. See docs/brokers.md.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from itinerant.brokers.broker_security import BrokerSecurity
from itinerant.brokers.connection import (
    EmbeddedBrokerError,
    broker_reachable,
    port_open,
    signal_group,
    tail_of,
    terminate_group,
)
from itinerant.errors import NonRetryableError
from itinerant.lifeline import die_with_parent

log = logging.getLogger(__name__)

MIN_JAVA = 17
#: Where `make install` puts the jars (``<root>/.kafka/libs``), unless ITINERANT_KAFKA_HOME says.
DEFAULT_KAFKA_HOME = Path(__file__).resolve().parents[2] / ".kafka"
_JAR_VERSION = re.compile(r"^kafka_2\.13-(?P<version>[0-9][^-]*)\.jar$")
_JAVA_VERSION = re.compile(r'version "(?P<major>\d+)(?:\.(?P<minor>\d+))?')


class KafkaUnavailable(NonRetryableError):
    """The embedded Apache Kafka cannot run here (no jars, no Java, Java too old)."""

    reason = "kafka_unavailable"
    hint = "run `make install` (it fetches Kafka and a JRE), or set ITINERANT_BROKER=tansu"


class KafkaStorageError(EmbeddedBrokerError):
    """The storage directory belongs to another node or cluster, or Kafka refused it."""

    reason = "kafka_storage_error"


# --- what is installed ----------------------------------------------------------------------


def kafka_home(configured: Path | None = None) -> Path:
    return configured if configured is not None else DEFAULT_KAFKA_HOME


def kafka_jars(home: Path) -> list[Path]:
    libs = home / "libs"
    return sorted(libs.glob("*.jar")) if libs.is_dir() else []


def kafka_version(home: Path) -> str | None:
    for jar in kafka_jars(home):
        match = _JAR_VERSION.match(jar.name)
        if match:
            return match.group("version")
    return None


def find_java() -> tuple[Path, int]:
    """The ``java`` to run Kafka with (``$JAVA_HOME/bin/java``, else PATH) and its major version.

    Raises :class:`KafkaUnavailable` when there is none or it is older than Java 17.
    """
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is None or not candidate.exists():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    if candidate is None:
        raise KafkaUnavailable(
            f"Apache Kafka needs Java {MIN_JAVA} or newer and no `java` was found "
            "(JAVA_HOME unset, none on PATH)",
            hint="install a JRE (`apt-get install openjdk-17-jre-headless`; `make install` does "
            "it), or set ITINERANT_BROKER=tansu for the no-Java development broker",
        )
    try:
        out = subprocess.run(
            [str(candidate), "-version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaUnavailable(f"cannot run {candidate} -version: {exc}") from exc
    match = _JAVA_VERSION.search(out.stderr + out.stdout)
    if match is None:
        raise KafkaUnavailable(f"cannot read the version of {candidate}: {out.stderr.strip()!r}")
    major = int(match.group("major"))
    if major == 1 and match.group("minor"):  # "1.8.0_392" is Java 8
        major = int(match.group("minor"))
    if major < MIN_JAVA:
        raise KafkaUnavailable(
            f"Apache Kafka 4 needs Java {MIN_JAVA} or newer; {candidate} is Java {major}",
            hint="install a newer JRE (`apt-get install openjdk-17-jre-headless`) and set "
            "JAVA_HOME to it, or set ITINERANT_BROKER=tansu",
        )
    return candidate, major


def require_kafka(home: Path) -> tuple[Path, list[Path]]:
    """Java and the classpath, or :class:`KafkaUnavailable` saying what to do."""
    jars = kafka_jars(home)
    if kafka_version(home) is None:
        raise KafkaUnavailable(
            f"Apache Kafka is not installed at {home} (no kafka_2.13-*.jar in {home / 'libs'})",
            hint="run `make install` (it fetches the pinned version with Maven), point "
            "ITINERANT_KAFKA_HOME at a folder holding libs/*.jar, or set ITINERANT_BROKER=tansu",
        )
    java, _major = find_java()
    return java, jars


def kafka_available(home: Path) -> str | None:
    """None when the embedded Kafka can run here, else why not (one line)."""
    try:
        require_kafka(home)
    except KafkaUnavailable as exc:
        return exc.describe()
    return None


# --- one node -------------------------------------------------------------------------------

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
"""


@dataclass(frozen=True)
class Voter:
    node_id: int
    host: str
    controller_port: int

    def spec(self) -> str:
        return f"{self.node_id}@{self.host}:{self.controller_port}"


@dataclass
class KafkaNode:
    """One KRaft node (broker + controller) on ``host:port``, controller on ``controller_port``.

    ``storage`` holds its log dirs, its generated config and its cluster id; it is formatted on
    the first start only. ``voters`` are the controller quorum (just this node by default).
    """

    storage: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int | None = None
    node_id: int = 1
    voters: list[Voter] = field(default_factory=list)
    cluster_id: str | None = None
    heap_mb: int = 512
    home: Path = DEFAULT_KAFKA_HOME
    extra: dict[str, str] = field(default_factory=dict)
    #: SASL_SSL, SCRAM users and the authorizer (ITINERANT_EMBEDDED_KAFKA_SECURITY); None: open.
    security: BrokerSecurity | None = None
    startup_timeout_s: float = 60.0
    stop_grace_s: float = 30.0
    #: Stop when the process that started it dies (itinerant/lifeline.py): `itinerant up`'s.
    die_with_parent: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    log_path: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.controller_port is None:
            self.controller_port = self.port + 1
        if not self.voters:
            self.voters = [Voter(self.node_id, self.host, self.controller_port)]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_dir(self) -> Path:
        return self.storage / "data"

    def properties(self) -> dict[str, str]:
        replicas = len(self.voters)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(v.spec() for v in self.voters),
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            # Topics exist because `itinerant topics create` made them, never by accident.
            "auto.create.topics.enable": "false",
            # A development broker: no wait for more members before the first rebalance, and
            # session timeouts as short as the services ask for (ITINERANT_SESSION_TIMEOUT_S).
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "offsets.topic.replication.factor": str(min(3, replicas)),
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": str(min(3, replicas)),
            "transaction.state.log.min.isr": str(min(2, replicas)),
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": str(min(3, replicas)),
            "share.coordinator.state.topic.min.isr": str(min(2, replicas)),
            "min.insync.replicas": str(min(2, replicas)),
            "default.replication.factor": str(min(3, replicas)),
            # Two cores: few threads. A dead node is fenced (and leaves the ISR) within seconds.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "replica.lag.time.max.ms": "5000",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.security is not None:
            assert self.controller_port is not None
            props.update(
                self.security.broker_properties(self.host, self.port, self.controller_port)
            )
        props.update(self.extra)
        return props

    @property
    def client_security(self) -> dict[str, str]:
        """librdkafka properties an admin client of this node needs (empty when open)."""
        return self.security.admin_client_security() if self.security is not None else {}

    def _write_config(self) -> Path:
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.storage / "server.properties"
        text = "".join(f"{k}={v}\n" for k, v in self.properties().items())
        # 0600 from the start: in secure mode it holds the admin's SCRAM password.
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(config, 0o600)
        (self.storage / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _meta(self) -> dict[str, str]:
        meta = self.log_dir / "meta.properties"
        if not meta.exists():
            return {}
        pairs = (
            line.split("=", 1)
            for line in meta.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        return {k.strip(): v.strip() for k, v in pairs}

    def _cluster_id(self) -> str:
        """The cluster id: given, or the one kept in ``storage``, or a new one (then kept)."""
        if self.cluster_id is None:
            self.cluster_id = _kept_cluster_id(self.storage)
        return self.cluster_id

    def _java_command(self, java: Path, jars: list[Path], main: str, *args: str) -> list[str]:
        heap = max(128, self.heap_mb)
        return [
            str(java),
            f"-Xms{min(256, heap)}m",
            f"-Xmx{heap}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.storage / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.storage / 'logs'}",
            "-cp",
            os.pathsep.join(str(j) for j in jars),
            main,
            *args,
        ]

    def format_storage(self, java: Path, jars: list[Path], config: Path) -> None:
        """Format the log dir once; refuse storage of another node or cluster."""
        cluster_id = self._cluster_id()
        meta = self._meta()
        if meta:
            if meta.get("cluster.id") != cluster_id or meta.get("node.id") != str(self.node_id):
                raise KafkaStorageError(
                    f"the Kafka storage at {self.log_dir} belongs to cluster "
                    f"{meta.get('cluster.id')} node {meta.get('node.id')}, not cluster "
                    f"{cluster_id} node {self.node_id}",
                    hint=f"remove {self.storage} to start afresh (its messages are lost), or "
                    "set ITINERANT_DATA_DIR to another folder",
                )
            return
        command = self._java_command(
            java,
            jars,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
            *(self.security.scram_format_args() if self.security is not None else []),
        )
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise KafkaStorageError(
                f"formatting the Kafka storage at {self.log_dir} failed: "
                f"{self._redact((done.stdout + done.stderr).strip()[-800:])}",
                hint=f"remove {self.storage} and start again, or set ITINERANT_DATA_DIR",
            )
        log.info("formatted Kafka storage at %s (cluster %s)", self.log_dir, cluster_id)

    def _redact(self, text: str) -> str:
        """``text`` without any SCRAM password (format errors may echo their arguments)."""
        if self.security is not None:
            for password in self.security.passwords().values():
                text = text.replace(password, "***")
        return text

    def launch(self, log_path: Path) -> None:
        """Format if needed and start the JVM; do not wait for it (see :meth:`wait_ready`)."""
        if self.running:
            raise EmbeddedBrokerError(f"Kafka node {self.node_id} already runs (pid {self.pid})")
        assert self.controller_port is not None
        for port in (self.port, self.controller_port):
            if port_open(self.host, port):
                raise _port_in_use(self.host, port)
        java, jars = require_kafka(self.home)
        config = self._write_config()
        self.format_storage(java, jars, config)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with log_path.open("ab") as out:
            try:
                self._proc = subprocess.Popen(
                    self._java_command(java, jars, "kafka.Kafka", str(config)),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=die_with_parent() if self.die_with_parent else None,
                )
            except OSError as exc:
                raise EmbeddedBrokerError(f"cannot run {java}: {exc}") from exc
        log.info("kafka node %d starting: pid %s on %s", self.node_id, self.pid, self.bootstrap)

    def wait_ready(self, deadline: float | None = None) -> None:
        """Return once the node answers a metadata request; raise if it exits or times out."""
        assert self._proc is not None
        deadline = deadline or time.monotonic() + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._exited(code)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedBrokerError(
                    f"Kafka node {self.node_id} did not answer on {self.bootstrap} in "
                    f"{self.startup_timeout_s:g}s; see {self.log_path}:\n{self._tail()}"
                )
            if broker_reachable(self.bootstrap, min(2.0, remaining), self.client_security):
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))

    def _exited(self, code: int) -> EmbeddedBrokerError:
        tail = self._tail()
        if "meta.properties" in tail or ("storage" in tail.lower() and "format" in tail.lower()):
            return KafkaStorageError(
                f"Kafka node {self.node_id} refused its storage at {self.log_dir} (exit {code}); "
                f"see {self.log_path}:\n{tail}",
                hint=f"remove {self.storage} to start afresh (its messages are lost)",
            )
        return EmbeddedBrokerError(
            f"Kafka node {self.node_id} exited with code {code} while starting; "
            f"see {self.log_path}:\n{tail}"
        )

    def _tail(self) -> str:
        return tail_of(self.log_path) if self.log_path is not None else ""

    def start(self, log_path: Path) -> None:
        self.launch(log_path)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("kafka node %d ready on %s", self.node_id, self.bootstrap)

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            signal_group(self._proc, sig)

    def kill(self) -> None:
        """SIGKILL (fault tests): no controlled shutdown, storage as a crash leaves it."""
        if self._proc is not None and self._proc.poll() is None:
            self.signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> int | None:
        """Controlled shutdown (SIGTERM), SIGKILL after ``stop_grace_s``; the exit code."""
        if self._proc is None:
            return None
        return terminate_group(self._proc, self.stop_grace_s, f"kafka node {self.node_id}")

    def __enter__(self) -> KafkaNode:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _port_in_use(host: str, port: int) -> EmbeddedBrokerError:
    from itinerant.brokers.connection import BrokerPortInUse

    return BrokerPortInUse(
        f"port {host}:{port} is already in use; stop what listens there (another "
        "`itinerant up`?), or choose another KAFKA_BOOTSTRAP_SERVERS port, or set "
        "ITINERANT_BROKER=external to use what listens there as your Kafka"
    )


# --- several nodes --------------------------------------------------------------------------


@dataclass
class KafkaCluster:
    """``size`` KRaft nodes on loopback, each broker and controller, sharing one cluster id.

    Ports: node i listens on ``base_port + 2*i`` and its controller on the next port.
    """

    storage: Path
    base_port: int
    size: int = 3
    host: str = "127.0.0.1"
    heap_mb: int = 384
    home: Path = DEFAULT_KAFKA_HOME
    extra: dict[str, str] = field(default_factory=dict)
    security: BrokerSecurity | None = None
    nodes: list[KafkaNode] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        voters = [Voter(i + 1, self.host, self.base_port + 2 * i + 1) for i in range(self.size)]
        cluster_id = _kept_cluster_id(self.storage)
        self.nodes = [
            KafkaNode(
                storage=self.storage / f"node-{i + 1}",
                host=self.host,
                port=self.base_port + 2 * i,
                controller_port=self.base_port + 2 * i + 1,
                node_id=i + 1,
                voters=voters,
                cluster_id=cluster_id,
                heap_mb=self.heap_mb,
                home=self.home,
                extra=dict(self.extra),
                security=self.security,
            )
            for i in range(self.size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def start(self, log_dir: Path, timeout_s: float = 90.0) -> None:
        """Start every node (they need each other for a quorum), then wait for all of them."""
        try:
            for node in self.nodes:
                node.launch(log_dir / f"kafka-{node.node_id}.log")
            deadline = time.monotonic() + timeout_s
            for node in self.nodes:
                node.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def restart(self, index: int, log_dir: Path, timeout_s: float = 60.0) -> None:
        node = self.nodes[index]
        node.launch(log_dir / f"kafka-{node.node_id}.log")
        node.wait_ready(time.monotonic() + timeout_s)

    def stop(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> KafkaCluster:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _kept_cluster_id(storage: Path) -> str:
    """The id kept in ``storage/cluster.id``, or a new one (kept there). A node's storage keeps
    the id it was formatted with in its own meta.properties too, which is what is checked."""
    kept = storage / "cluster.id"
    if kept.exists():
        return kept.read_text().strip()
    # Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    storage.mkdir(parents=True, exist_ok=True)
    kept.write_text(cluster_id + "\n")
    return cluster_id
