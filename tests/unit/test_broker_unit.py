"""Pure tests of broker addressing, port probing and storage warnings."""

from __future__ import annotations

import socket

import pytest

from itinerant.brokers.connection import parse_bootstrap, port_open
from itinerant.brokers.topics import storage_warnings


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("localhost:19250", ("localhost", 19250)),
        ("kafka", ("kafka", 9092)),
        ("a:1,b:2", ("a", 1)),
        (" broker-1:29092 , broker-2:29092", ("broker-1", 29092)),
        ("PLAINTEXT://kafka:9093", ("kafka", 9093)),
        ("[::1]:9094", ("::1", 9094)),
        ("[::1]", ("::1", 9092)),
    ],
)
def test_parse_bootstrap(servers: str, expected: tuple[str, int]) -> None:
    assert parse_bootstrap(servers) == expected


@pytest.mark.parametrize("servers", ["", " , ", "host:notaport", "host:70000", ":9092"])
def test_parse_bootstrap_rejects_garbage(servers: str) -> None:
    with pytest.raises(ValueError):
        parse_bootstrap(servers)


def test_port_open_sees_listener_and_closed_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert port_open("127.0.0.1", port, timeout=1.0)
    # Closed now: the connection is refused.
    assert not port_open("127.0.0.1", port, timeout=0.5)


def test_storage_warnings_only_at_or_above_threshold() -> None:
    marks = {("t.a", 0): 7_999, ("t.a", 1): 8_000, ("t.b", 0): 19_500, ("t.c", 3): 0}
    warnings = storage_warnings(marks)
    assert len(warnings) == 2
    # fullest first
    assert warnings[0].startswith("t.b[0]")
    assert warnings[1].startswith("t.a[1]")
    text = warnings[0]
    assert "19,500" in text
    assert "20,000" in text
    assert "itinerant down && itinerant up" in text
    assert "empties" in text
    assert "Apache Kafka" in text


def test_storage_warnings_custom_threshold_and_empty() -> None:
    assert storage_warnings({}) == []
    assert storage_warnings({("t", 0): 10}) == []
    assert len(storage_warnings({("t", 0): 10}, warn_at=10)) == 1
