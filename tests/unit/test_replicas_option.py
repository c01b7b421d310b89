"""`itinerant up --replicas`: what it accepts, what it refuses, and the processes it plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from itinerant.cli import scaling
from itinerant.cli.replicas import BadReplicas, check_replicas, parse_replicas
from itinerant.cli.supervisor import Supervisor
from itinerant.errors import Disposition
from itinerant.mesh import load_mesh
from itinerant.settings import REPLICA_PORT_STRIDE, Settings, replica_name


def bound(tmp_path: Path, **fields: object) -> Settings:
    settings = Settings(data_dir=tmp_path, **fields)  # type: ignore[arg-type]
    return load_mesh(settings.app).bind(settings)


def test_parse_replicas_reads_name_count_pairs() -> None:
    assert parse_replicas("flights=3, hotels=2,coordinator=2") == {
        "flights": 3,
        "hotels": 2,
        "coordinator": 2,
    }
    assert parse_replicas("") == {}


@pytest.mark.parametrize("text", ["flights", "flights=", "=2", "flights=two", "flights=-1"])
def test_parse_replicas_refuses_what_is_not_name_count(text: str) -> None:
    with pytest.raises(BadReplicas, match="NAME=COUNT") as caught:
        parse_replicas(text)
    assert caught.value.disposition is Disposition.DEAD_LETTER  # not retryable


def test_only_the_coordinator_and_agents_scale(tmp_path: Path) -> None:
    settings = bound(tmp_path)
    check_replicas({"flights": 2, "coordinator": 2}, settings)
    with pytest.raises(BadReplicas, match="gateway cannot run as replicas; these can: coord"):
        check_replicas({"gateway": 2}, settings)


def test_more_replicas_than_partitions_is_refused(tmp_path: Path) -> None:
    settings = bound(tmp_path, partitions=4)
    check_replicas({"flights": 4}, settings)
    with pytest.raises(BadReplicas, match="flights=5; between 1 and 4"):
        check_replicas({"flights": 5}, settings)
    with pytest.raises(BadReplicas, match="flights=0"):
        check_replicas({"flights": 0}, settings)


def test_the_shared_layout_has_no_replicas(tmp_path: Path) -> None:
    with pytest.raises(BadReplicas, match="process-per-service"):
        check_replicas({"flights": 2}, bound(tmp_path, layout="shared"))


def test_the_supervisor_plans_each_replica_after_its_service(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, gateway_port=0, mcp_port=0, console_port=0)
    supervisor = Supervisor(settings, replicas={"flights": 3, "coordinator": 2})
    planned = supervisor.planned()
    assert planned[:2] == ["coordinator", "coordinator-2"]
    at = planned.index("flights")
    assert planned[at : at + 3] == ["flights", "flights-2", "flights-3"]
    assert len(planned) == len(set(planned)) == len(supervisor.services) + 3


def test_each_replica_has_its_own_metrics_port(tmp_path: Path) -> None:
    settings = bound(tmp_path, metrics_port_base=9400)
    first = settings.metrics_port("flights")
    assert first is not None
    assert settings.metrics_port("flights", 2) == first + REPLICA_PORT_STRIDE
    as_replica_3 = settings.model_copy(update={"replica": 3})
    assert as_replica_3.metrics_port("flights") == first + 2 * REPLICA_PORT_STRIDE
    assert replica_name("flights", 1) == "flights"
    assert replica_name("flights", 3) == "flights-3"


# --- `itinerant scale`: the request and the answer, through the run directory -----------------


def test_a_scale_request_is_taken_once(tmp_path: Path) -> None:
    request = scaling.ScaleRequest({"flights": 3})
    scaling.write_request(tmp_path, request)
    taken = scaling.take_request(tmp_path)
    assert taken == request
    assert scaling.take_request(tmp_path) is None  # removed: applied once


def test_a_garbled_scale_request_is_taken_as_naming_nothing(tmp_path: Path) -> None:
    (tmp_path / scaling.REQUEST_FILE).write_text('{"id": "x", "replicas": {"flights": "3"}}')
    assert scaling.take_request(tmp_path) == scaling.ScaleRequest({}, "x")
    (tmp_path / scaling.REQUEST_FILE).write_text("not json")
    assert scaling.take_request(tmp_path) == scaling.ScaleRequest({}, "unknown")


@pytest.mark.parametrize(
    ("asked", "said"),
    [
        ({"gateway": 2}, "gateway cannot run as replicas"),
        ({"flights": 9}, "between 1 and 2"),
        ({}, "names no NAME=COUNT"),
    ],
)
def test_the_supervisor_answers_a_refused_request_and_starts_nothing(
    tmp_path: Path, asked: dict[str, int], said: str
) -> None:
    supervisor = Supervisor(Settings(data_dir=tmp_path, partitions=2))
    supervisor.run_dir.mkdir(parents=True)
    request = scaling.ScaleRequest(asked)
    scaling.write_request(supervisor.run_dir, request)
    supervisor.apply_scale_request()
    result = scaling.read_result(supervisor.run_dir, request.id)
    assert result is not None and result.error is not None and said in result.error, result
    assert result.started == [] and supervisor.procs == {}
    assert scaling.read_result(supervisor.run_dir, "another request") is None


def test_waiting_for_an_answer_that_never_comes_times_out_saying_where_to_look(
    tmp_path: Path,
) -> None:
    with pytest.raises(scaling.ScaleTimedOut, match="did not take the request"):
        scaling.wait_for_result(tmp_path, scaling.ScaleRequest({"flights": 2}), timeout_s=0.3)
