"""The embedded Kafka's checks that need no broker: Java version, installed jars, the fallback to
Tansu, and the generated KRaft configuration."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from itinerant.brokers.embedded import resolve_broker
from itinerant.brokers.kafka import (
    KafkaNode,
    KafkaUnavailable,
    Voter,
    find_java,
    kafka_version,
    require_kafka,
)
from itinerant.settings import Settings


def _java_home(tmp_path: Path, banner: str) -> Path:
    """A JAVA_HOME whose bin/java prints ``banner`` the way `java -version` does (on stderr)."""
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return home


def _installed(tmp_path: Path, version: str = "4.1.1") -> Path:
    home = tmp_path / "kafka-home"
    (home / "libs").mkdir(parents=True)
    (home / "libs" / f"kafka_2.13-{version}.jar").write_bytes(b"")
    (home / "libs" / "kafka-clients-4.1.1.jar").write_bytes(b"")
    return home


@pytest.mark.parametrize(
    ("banner", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
    ],
)
def test_java_17_or_newer_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, banner: str, major: int
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_java_home(tmp_path, banner)))
    java, found = find_java()
    assert found == major
    assert java == tmp_path / "jdk" / "bin" / "java"


@pytest.mark.parametrize(
    ("banner", "shown"),
    [('openjdk version "11.0.21" 2023-10-17', "Java 11"), ('java version "1.8.0_392"', "Java 8")],
)
def test_older_java_is_refused_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, banner: str, shown: str
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_java_home(tmp_path, banner)))
    with pytest.raises(KafkaUnavailable) as info:
        find_java()
    message = info.value.describe()
    assert shown in message
    assert "17 or newer" in message
    assert "ITINERANT_BROKER=tansu" in message


def test_no_java_at_all_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    with pytest.raises(KafkaUnavailable) as info:
        find_java()
    assert "no `java` was found" in info.value.describe()


def test_missing_jars_say_make_install(tmp_path: Path) -> None:
    with pytest.raises(KafkaUnavailable) as info:
        require_kafka(tmp_path / "empty")
    message = info.value.describe()
    assert "make install" in message
    assert "ITINERANT_KAFKA_HOME" in message
    assert kafka_version(_installed(tmp_path, "4.1.1")) == "4.1.1"


def test_default_broker_falls_back_to_tansu_with_a_warning(tmp_path: Path) -> None:
    settings = Settings(kafka_home=tmp_path / "nothing", data_dir=tmp_path)
    resolved, warning = resolve_broker(settings)
    assert resolved.broker == "tansu"
    assert warning is not None
    assert "Tansu" in warning and "make install" in warning
    assert settings.broker == "kafka"  # the caller's settings are not changed


def test_kafka_asked_for_explicitly_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    settings = Settings(broker="kafka", kafka_home=tmp_path / "nothing", data_dir=tmp_path)
    with pytest.raises(KafkaUnavailable):
        resolve_broker(settings)


def test_installed_kafka_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_java_home(tmp_path, 'openjdk version "17.0.1"')))
    settings = Settings(kafka_home=_installed(tmp_path), data_dir=tmp_path)
    assert resolve_broker(settings) == (settings, None)
    for other in ("tansu", "external"):
        chosen = Settings(broker=other, kafka_home=tmp_path / "nothing")
        assert resolve_broker(chosen) == (chosen, None)


def test_broker_kind_tunes_the_clients() -> None:
    kafka, tansu, external = (Settings(broker=b) for b in ("kafka", "tansu", "external"))
    assert kafka.consumer_fetch_wait_ms == 500 and tansu.consumer_fetch_wait_ms == 10
    assert kafka.idempotent_producer and external.idempotent_producer
    assert not tansu.idempotent_producer
    assert kafka.consumer_session_timeout_s == 3.0
    assert external.consumer_session_timeout_s == 10.0
    assert Settings(replication_factor=3).consumer_session_timeout_s == 10.0
    assert Settings(fetch_wait_ms=50, broker="tansu").consumer_fetch_wait_ms == 50
    assert Settings(replication_factor=3).topic_min_insync_replicas == 2
    assert Settings(replication_factor=1).topic_min_insync_replicas == 1


def test_kraft_config_of_a_three_node_quorum(tmp_path: Path) -> None:
    voters = [Voter(i, "127.0.0.1", 20001 + 2 * i) for i in (1, 2, 3)]
    node = KafkaNode(storage=tmp_path, port=20002, controller_port=20003, node_id=2, voters=voters)
    props = node.properties()
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:20003,2@127.0.0.1:20005,3@127.0.0.1:20007"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:20002,CONTROLLER://127.0.0.1:20003"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    single = KafkaNode(storage=tmp_path, port=9092)
    assert single.controller_port == 9093
    assert single.properties()["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert single.properties()["min.insync.replicas"] == "1"
    assert os.fspath(node.log_dir).startswith(os.fspath(tmp_path))
