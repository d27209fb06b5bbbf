"""The circuit breaker on its own: edge and probe outcomes in, state and events out, a fake clock."""

from __future__ import annotations

import pytest

from robot_compress.runtime.circuit_breaker import CircuitBreaker, RouterState
from robot_compress.runtime.perception_config import RouterConfig

EDGE, LOCAL, PROBING = RouterState.EDGE, RouterState.LOCAL, RouterState.PROBING


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock=None, **config) -> CircuitBreaker:
    config = RouterConfig(**{"probe_period_ms": 500.0, "recovery_probes": 2, "failure_threshold": 1, **config})
    return CircuitBreaker(config, clock=clock or FakeClock(), wall_clock=lambda: 1.7e9)


def probe(breaker: CircuitBreaker, latency_ms: float | None = 5.0, failure: str | None = None):
    return breaker.probe_finished(breaker.start_probe(), latency_ms, failure, "scripted")


def recover(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.recovery_probes):
        probe(breaker)
    assert breaker.state is EDGE


def transitions(breaker: CircuitBreaker) -> list[tuple]:
    return [(e.previous, e.state, e.reason) for e in breaker.events]


def test_starts_local_and_recovers_through_probing():
    breaker = make(recovery_probes=3)
    assert [e.reason for e in probe(breaker)] == ["healthy_probe"]
    assert breaker.state is PROBING
    assert probe(breaker) == [] and breaker.state is PROBING
    assert [e.reason for e in probe(breaker)] == ["recovered"]
    assert transitions(breaker) == [(None, LOCAL, "startup"), (LOCAL, PROBING, "healthy_probe"),
                                    (PROBING, EDGE, "recovered")]
    assert all(e.time == 1.7e9 for e in breaker.events)  # events carry the wall clock


def test_without_an_edge_it_stays_local_and_never_probes():
    breaker = CircuitBreaker(RouterConfig(), has_edge=False, clock=FakeClock())
    assert breaker.state is LOCAL and breaker.next_probe_at is None
    assert transitions(breaker) == [(None, LOCAL, "no_edge")]


def test_first_probe_is_due_one_period_after_start_then_every_period():
    clock = FakeClock(100.0)
    breaker = make(clock)
    assert breaker.next_probe_at == pytest.approx(100.5)
    clock.now = 100.5
    breaker.start_probe()
    assert breaker.next_probe_at == pytest.approx(101.0)
    clock.now = 103.0  # the prober fell behind: the next probe is due now, not a burst of missed ones
    breaker.start_probe()
    assert breaker.next_probe_at == pytest.approx(103.0)


def test_consecutive_failures_open_the_circuit_and_a_success_resets_the_count():
    breaker = make(failure_threshold=3)
    recover(breaker)
    assert breaker.edge_failed("timeout") is None and breaker.edge_failed("timeout") is None
    breaker.edge_succeeded()
    assert breaker.edge_failed("unreachable") is None and breaker.edge_failed("unreachable") is None
    event = breaker.edge_failed("unreachable", "connection refused")
    assert (event.previous, event.state, event.reason, event.detail) == (EDGE, LOCAL, "unreachable",
                                                                         "connection refused")
    assert breaker.failovers == 1


def test_failures_outside_edge_change_nothing():
    breaker = make(failure_threshold=1)
    assert breaker.edge_failed("timeout") is None and breaker.state is LOCAL and breaker.failovers == 0


def test_a_failover_waits_a_full_period_before_the_first_probe():
    clock = FakeClock(100.0)
    breaker = make(clock)
    clock.now = 100.5
    recover(breaker)
    assert breaker.next_probe_at is None  # at the edge: no probing
    clock.now = 101.2  # off the old probe schedule
    breaker.edge_failed("timeout")
    assert breaker.next_probe_at == pytest.approx(101.7)


def test_an_unhealthy_probe_while_probing_goes_back_to_local_and_restarts_the_count():
    breaker = make(recovery_probes=3)
    probe(breaker)
    assert [(e.state, e.reason, e.detail) for e in probe(breaker, None, "unreachable")] == [
        (LOCAL, "unreachable", "scripted")]
    probe(breaker), probe(breaker)
    assert breaker.state is PROBING  # two healthy probes since the failure, three needed
    assert [e.reason for e in probe(breaker)] == ["recovered"]


def test_a_slow_probe_is_unhealthy():
    breaker = make(max_edge_latency_ms=10.0, recovery_probes=1)
    assert probe(breaker, 30.0) == [] and breaker.state is LOCAL
    assert breaker.last_probe_ms == 30.0
    probe(breaker)
    probe(breaker, 30.0)
    assert breaker.state is EDGE  # a probe at the edge is not asked for, and would not count
    breaker2 = make(max_edge_latency_ms=10.0, recovery_probes=2)
    probe(breaker2)
    [event] = probe(breaker2, 30.0)
    assert (event.state, event.reason, event.detail) == (LOCAL, "slow", "probe took 30.0 ms > 10 ms")


def test_force_local_holds_local_stops_probing_and_drops_probes_in_flight():
    clock = FakeClock(100.0)
    breaker = make(clock, recovery_probes=1)
    recover(breaker)
    event = breaker.force_local(True)
    assert (event.previous, event.state, event.reason) == (EDGE, LOCAL, "forced_local")
    assert breaker.next_probe_at is None and breaker.forced
    token = breaker.start_probe()  # a probe already running when the operator releases
    clock.now = 107.0
    released = breaker.force_local(False)
    assert (released.previous, released.state, released.reason) == (LOCAL, LOCAL, "force_released")
    assert breaker.next_probe_at == pytest.approx(107.5)
    assert breaker.probe_finished(token, 5.0) == [] and breaker.state is LOCAL  # stale: does not count
    assert [e.reason for e in probe(breaker)] == ["healthy_probe", "recovered"]


def test_every_force_local_request_is_an_event_also_while_already_local():
    breaker = make()
    breaker.force_local(True)
    breaker.force_local(False)
    assert transitions(breaker) == [(None, LOCAL, "startup"), (LOCAL, LOCAL, "forced_local"),
                                    (LOCAL, LOCAL, "force_released")]
    assert breaker.failovers == 0 and breaker.events[-1].detail == "operator request"


def test_edge_results_while_forced_do_not_reopen_anything():
    breaker = make(recovery_probes=1)
    breaker.force_local(True)
    assert breaker.probe_finished(breaker.start_probe(), 5.0) == [] and breaker.state is LOCAL
