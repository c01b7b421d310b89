"""`itinerant up`'s restart policy (cli/restarts.py): backoff that grows with fast failures in a
row, resets after a healthy run, and gives up after too many fast failures."""

from __future__ import annotations

from itinerant.cli.restarts import BACKOFF_S, RestartPolicy


def test_backoff_grows_with_fast_failures_in_a_row() -> None:
    policy = RestartPolicy(healthy_after_s=60, give_up_after=10)
    delays = []
    for _ in range(len(BACKOFF_S) + 2):
        policy.exited(uptime_s=1.0)
        delays.append(policy.delay_s)
    assert delays == [*BACKOFF_S, BACKOFF_S[-1], BACKOFF_S[-1]]
    assert not policy.given_up


def test_a_healthy_run_resets_the_backoff() -> None:
    policy = RestartPolicy(healthy_after_s=60, give_up_after=10)
    for _ in range(4):
        policy.exited(uptime_s=2.0)
    assert policy.delay_s == BACKOFF_S[3]
    policy.exited(uptime_s=61.0)
    assert policy.failures == 1 and policy.delay_s == BACKOFF_S[0]


def test_it_gives_up_after_too_many_fast_failures_only() -> None:
    policy = RestartPolicy(healthy_after_s=60, give_up_after=3)
    policy.exited(uptime_s=0.5)
    policy.exited(uptime_s=0.5)
    assert not policy.given_up
    policy.exited(uptime_s=120.0)  # a healthy run between: the count starts over
    policy.exited(uptime_s=0.5)
    assert not policy.given_up
    policy.exited(uptime_s=0.5)
    assert policy.given_up
