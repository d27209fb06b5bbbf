"""The router's per-frame race (deadline, hedging) and prober, driving the circuit breaker, with
scripted backends (tests/runtime/doubles.py); the breaker's own cases are in test_circuit_breaker.py."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robot_compress.runtime.backend import FailureKind
from robot_compress.runtime.perception_config import RouterConfig
from robot_compress.runtime.polling import wait_until
from robot_compress.runtime.router import Router, RouterState
from tests.runtime.doubles import EDGE_CLASS, LOCAL_CLASS, ScriptedEdge, SlowLocal

BATCH = np.zeros((1, 3, 32, 32), dtype=np.float32)
FAST = dict(probe_period_ms=20.0, probe_timeout_ms=50.0, recovery_probes=2, deadline_ms=100.0)


def wait_for(predicate, timeout=3.0):
    """True once `predicate()` is (checked every 5 ms), else TimeoutError."""
    return bool(wait_until(predicate, timeout, interval_s=0.005))


@pytest.fixture
def make_router():
    routers = []

    def make(edge=None, local=None, **config):
        events = []
        router = Router(local or SlowLocal(), edge, RouterConfig(**{**FAST, **config}), on_event=events.append)
        router.events = events
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.close()


def at_edge(make_router, edge, **config):
    router = make_router(edge, **config)
    assert wait_for(lambda: router.state is RouterState.EDGE), router.stats()
    return router


def test_without_edge_everything_is_local(make_router):
    router = make_router(None)
    results = [router.classify(BATCH, stamp=i) for i in range(3)]
    assert [r.backend for r in results] == ["local"] * 3
    assert [r.stamp for r in results] == [0, 1, 2]
    assert router.state is RouterState.LOCAL and router.events[0].reason == "no_edge"


def test_starts_local_then_recovers_through_probing(make_router):
    edge = ScriptedEdge()
    router = make_router(edge, probe_period_ms=50.0, recovery_probes=3)
    assert router.classify(BATCH).backend == "local"
    t0 = time.monotonic()
    assert wait_for(lambda: router.state is RouterState.EDGE)
    assert time.monotonic() - t0 < 0.05 * 3 + 0.5
    assert [(e.previous, e.state, e.reason) for e in router.events] == [
        (None, RouterState.LOCAL, "startup"),
        (RouterState.LOCAL, RouterState.PROBING, "healthy_probe"),
        (RouterState.PROBING, RouterState.EDGE, "recovered"),
    ]
    assert edge.probes >= 3
    assert all(e.time > 0 for e in router.events)


def test_healthy_edge_answers_every_frame_once(make_router):
    router = at_edge(make_router, ScriptedEdge(delay_s=0.001))
    results = [router.classify(BATCH, stamp=("s", i)) for i in range(20)]
    assert [r.backend for r in results] == ["edge"] * 20
    assert [r.seq for r in results] == sorted(r.seq for r in results)
    assert all(int(np.argmax(r.logits)) == EDGE_CLASS and r.state is RouterState.EDGE for r in results)
    assert all(r.latency_ms >= r.inference_ms > 0 for r in results)
    assert all(abs(r.answered_at - time.time()) < 5.0 for r in results)  # wall clock, like camera stamps
    stats = router.stats()
    assert stats.answers == {"edge": 20}
    assert stats.edge_rtt_p50_ms is not None and stats.failovers == 0


@pytest.mark.parametrize("kind", [FailureKind.UNREACHABLE, FailureKind.OVERLOADED])
def test_edge_failure_answers_the_same_frame_locally_and_opens_the_circuit(make_router, kind):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge)
    edge.mode, edge.probe_ok = kind, False
    result = router.classify(BATCH, stamp=7)
    assert (result.backend, result.edge_failure, result.stamp) == ("local", kind.value, 7)
    assert int(np.argmax(result.logits)) == LOCAL_CLASS
    assert router.state is RouterState.LOCAL
    last = router.events[-1]
    assert (last.previous, last.state, last.reason) == (RouterState.EDGE, RouterState.LOCAL, kind.value)
    calls = edge.calls
    assert router.classify(BATCH).backend == "local" and edge.calls == calls  # circuit open: edge not asked
    assert router.stats().failovers == 1


def test_failure_threshold_counts_consecutive_failures(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge, failure_threshold=3)
    edge.mode, edge.probe_ok = FailureKind.UNREACHABLE, False
    assert [router.classify(BATCH).backend for _ in range(2)] == ["local", "local"]
    assert router.state is RouterState.EDGE
    edge.mode = "ok"
    assert router.classify(BATCH).backend == "edge"  # a success resets the count
    edge.mode = FailureKind.UNREACHABLE
    router.classify(BATCH), router.classify(BATCH)
    assert router.state is RouterState.EDGE
    router.classify(BATCH)
    assert router.state is RouterState.LOCAL
    assert router.stats().edge_failures == {"unreachable": 5}


def test_deadline_miss_is_answered_locally_and_the_late_answer_dropped(make_router):
    edge = ScriptedEdge(delay_s=0.0)
    router = at_edge(make_router, edge, deadline_ms=40.0)
    edge.delay_s, edge.probe_ok = 0.4, False  # answers, but far too late
    edge.finished.clear()
    result = router.classify(BATCH)
    assert (result.backend, result.edge_failure) == ("local", "timeout")
    assert result.latency_ms < 400  # answered before the edge's answer existed
    assert router.state is RouterState.LOCAL and router.events[-1].reason == "timeout"
    assert router.stats().late_edge_dropped == 0
    assert edge.finished.wait(2.0)
    assert wait_for(lambda: router.stats().late_edge_dropped == 1)


def test_black_hole_edge_times_out_at_the_deadline(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge, deadline_ms=50.0)
    edge.mode, edge.probe_ok = "hang", False
    result = router.classify(BATCH)
    assert (result.backend, result.edge_failure) == ("local", "timeout")
    assert 50 <= result.latency_ms < 1000


def test_bad_edge_answer_is_rejected(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge)
    edge.mode, edge.probe_ok = "garbage", False
    result = router.classify(BATCH)
    assert (result.backend, result.edge_failure) == ("local", "bad_answer")


def test_failed_probe_while_probing_goes_back_to_local(make_router):
    edge = ScriptedEdge()
    router = make_router(edge, probe_period_ms=30.0, recovery_probes=1000)
    assert wait_for(lambda: router.state is RouterState.PROBING)
    assert router.classify(BATCH).backend == "local"  # half-open: frames still local
    edge.probe_ok = False
    assert wait_for(lambda: router.state is RouterState.LOCAL)
    assert router.events[-1].reason == "unreachable"
    edge.probe_ok = True
    assert wait_for(lambda: router.state is RouterState.PROBING)


def test_a_failover_right_after_recovery_still_waits_a_full_probe_period():
    """Hysteresis holds even when the failover lands while the prober is busy: here the recovery
    event's own callback (run in the prober's thread) sends a frame into a black hole. The first
    probe after that failover must come a full period after it, not on the old schedule."""
    edge, probe_times, failover_at = ScriptedEdge(), [], []
    scripted_probe = edge.probe

    def timed_probe(timeout_s):
        probe_times.append(time.monotonic())
        return scripted_probe(timeout_s)

    def on_event(event):
        if event.reason == "recovered" and not failover_at:
            edge.mode = "hang"
            router.classify(BATCH)  # fails over at the 100 ms deadline, inside the prober's thread
        elif event.previous is RouterState.EDGE:
            failover_at.append(time.monotonic())

    edge.probe = timed_probe
    config = RouterConfig(**{**FAST, "probe_period_ms": 200.0, "recovery_probes": 1, "failure_threshold": 1})
    router = Router(SlowLocal(), edge, config, on_event=on_event)
    try:
        assert wait_for(lambda: failover_at and any(t > failover_at[0] for t in probe_times)), router.stats()
    finally:
        router.close()
    first_probe_after = min(t for t in probe_times if t > failover_at[0])
    assert first_probe_after - failover_at[0] >= 0.2 - 0.005, (probe_times, failover_at)


@pytest.mark.parametrize("fault", ["hang", FailureKind.UNREACHABLE])
def test_the_failover_event_is_emitted_after_the_frame_is_answered(fault):
    """The subscriber's callback (a log line and two messages in the node) must not delay the
    first frame of a fault: with a 300 ms callback the frame is still answered at the deadline."""
    edge, answered, emitted = ScriptedEdge(), [], []

    class TimedLocal(SlowLocal):
        def infer(self, batch):
            logits = super().infer(batch)
            answered.append(time.monotonic())
            return logits

    def on_event(event):
        if event.previous is RouterState.EDGE:
            emitted.append(time.monotonic())
            time.sleep(0.3)

    router = Router(TimedLocal(), edge, RouterConfig(**{**FAST, "failure_threshold": 1}), on_event=on_event)
    try:
        assert wait_for(lambda: router.state is RouterState.EDGE), router.stats()
        edge.mode, edge.probe_ok = fault, False
        result = router.classify(BATCH)
    finally:
        router.close()
    assert result.backend == "local" and result.latency_ms < 250, result
    assert len(emitted) == 1 and emitted[0] >= answered[-1]


def test_slow_probes_do_not_bring_the_edge_back(make_router):
    edge = ScriptedEdge(probe_delay_s=0.03)
    router = make_router(edge, probe_period_ms=10.0, max_edge_latency_ms=10.0, recovery_probes=1)
    assert wait_for(lambda: edge.probes >= 5)
    assert router.state is RouterState.LOCAL
    assert router.stats().last_probe_ms > 10.0
    edge.probe_delay_s = 0.0
    assert wait_for(lambda: router.state is RouterState.EDGE)


def test_hedge_takes_the_local_answer_when_the_edge_is_late(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge, deadline_ms=500.0, hedge_after_ms=20.0)
    edge.delay_s = 0.3
    edge.finished.clear()
    result = router.classify(BATCH)
    assert (result.backend, result.hedged, result.edge_failure) == ("local", True, None)
    assert result.latency_ms < 300
    assert router.state is RouterState.EDGE  # late is not failed: the deadline was not missed
    assert edge.finished.wait(2.0)
    assert wait_for(lambda: router.stats().late_edge_dropped == 1)
    assert router.stats().hedged == 1


def test_hedge_keeps_the_edge_answer_when_it_wins(make_router):
    local = SlowLocal(delay_s=0.3)
    router = at_edge(make_router, ScriptedEdge(delay_s=0.04), local=local, deadline_ms=500.0, hedge_after_ms=10.0)
    result = router.classify(BATCH)
    assert (result.backend, result.hedged) == ("edge", True)
    assert int(np.argmax(result.logits)) == EDGE_CLASS


def test_fast_edge_is_never_hedged(make_router):
    local = SlowLocal()
    router = at_edge(make_router, ScriptedEdge(), local=local, deadline_ms=500.0, hedge_after_ms=200.0)
    calls = local.calls
    assert router.classify(BATCH).backend == "edge"
    assert local.calls == calls and router.stats().hedged == 0


def test_inflight_limit_answers_locally_instead_of_queueing(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge, deadline_ms=500.0, hedge_after_ms=5.0, edge_max_inflight=1,
                     failure_threshold=10)
    edge.delay_s = 0.4
    first = router.classify(BATCH)  # hedge wins; the edge call stays in flight
    second = router.classify(BATCH)
    assert first.backend == "local" and second.edge_failure == "overloaded"


def test_force_local_stops_probing_until_released(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge)
    router.force_local(True)
    assert router.state is RouterState.LOCAL and router.events[-1].reason == "forced_local"
    probes = edge.probes
    time.sleep(0.15)
    assert edge.probes == probes and router.state is RouterState.LOCAL
    assert router.classify(BATCH).backend == "local"
    router.force_local(False)
    assert wait_for(lambda: router.state is RouterState.EDGE)


def test_a_failing_local_backend_still_gives_one_result(make_router):
    router = make_router(None, local=SlowLocal(fail=True))
    result = router.classify(BATCH, stamp=3)
    assert (result.backend, result.stamp, result.logits) == ("none", 3, None)
    assert "scripted local failure" in result.error
    assert router.stats().answers == {"none": 1}


def test_hedging_against_a_hanging_edge_still_fails_over(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge, deadline_ms=60.0, hedge_after_ms=20.0, failure_threshold=3)
    edge.mode, edge.probe_ok = "hang", False
    results = []
    for i in range(60):  # two seconds at 30 Hz
        results.append(router.classify(BATCH, stamp=i))
        time.sleep(1 / 30)
    assert all(r.backend == "local" for r in results)
    assert router.state is RouterState.LOCAL and router.stats().failovers == 1
    assert router.events[-1].reason == "timeout"
    hedged_before_failover = [r for r in results if r.hedged]
    assert 3 <= len(hedged_before_failover) <= 6  # the threshold, plus frames sent before the failures landed
    assert router.stats().edge_failures["timeout"] == len(hedged_before_failover)


def test_a_late_but_successful_edge_answer_after_a_hedge_counts_as_a_timeout(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge, deadline_ms=60.0, hedge_after_ms=10.0)
    edge.delay_s, edge.probe_ok = 0.2, False  # answers, but after the deadline
    edge.finished.clear()
    result = router.classify(BATCH)
    assert (result.backend, result.hedged) == ("local", True)
    assert edge.finished.wait(2.0)
    assert wait_for(lambda: router.state is RouterState.LOCAL)
    stats = router.stats()
    assert stats.edge_failures == {"timeout": 1} and stats.late_edge_dropped == 1


def test_a_failing_hedge_does_not_end_the_wait_for_the_edge(make_router):
    local = SlowLocal(fail=True)
    router = at_edge(make_router, ScriptedEdge(delay_s=0.05), local=local, deadline_ms=300.0, hedge_after_ms=10.0)
    result = router.classify(BATCH)
    assert (result.backend, result.hedged, result.error) == ("edge", True, None)
    assert local.calls == 1 and router.state is RouterState.EDGE


def test_a_failing_hedge_and_a_failing_edge_give_one_result_with_the_reason(make_router):
    edge = ScriptedEdge()
    router = at_edge(make_router, edge, local=SlowLocal(fail=True), deadline_ms=80.0, hedge_after_ms=10.0)
    edge.mode, edge.probe_ok = "hang", False
    result = router.classify(BATCH)
    assert (result.backend, result.edge_failure, result.hedged) == ("none", "timeout", True)
    assert "scripted local failure" in result.error
    assert router.state is RouterState.LOCAL and router.stats().edge_failures == {"timeout": 1}


def test_a_raising_event_callback_stops_neither_the_prober_nor_the_frames():
    def on_event(event):
        raise RuntimeError("subscriber bug")

    edge = ScriptedEdge()
    router = Router(SlowLocal(), edge, RouterConfig(**FAST), on_event=on_event)
    try:
        assert wait_for(lambda: router.state is RouterState.EDGE), router.stats()  # prober survived two events
        edge.mode, edge.probe_ok = FailureKind.UNREACHABLE, False
        assert router.classify(BATCH).backend == "local" and router.state is RouterState.LOCAL
        edge.mode, edge.probe_ok = "ok", True
        assert wait_for(lambda: router.state is RouterState.EDGE)
        stats = router.stats()
        assert stats.prober_alive and stats.event_callback_errors >= 6  # startup, 2 recoveries, failover
        assert [e.reason for e in stats.events][-3:] == ["unreachable", "healthy_probe", "recovered"]
    finally:
        router.close()
    assert not router.stats().prober_alive


def test_every_force_local_request_is_an_event_also_while_already_local(make_router):
    router = make_router(ScriptedEdge(probe_ok=False))
    router.force_local(True)
    router.force_local(False)
    local = RouterState.LOCAL
    assert [(e.previous, e.state, e.reason, e.detail) for e in router.events] == [
        (None, local, "startup", ""), (local, local, "forced_local", "operator request"),
        (local, local, "force_released", "operator request")]
    assert router.stats().failovers == 0 and router.stats().last_event.reason == "force_released"


def test_a_probe_in_flight_when_the_override_is_released_does_not_count(make_router):
    edge = ScriptedEdge(probe_delay_s=0.3)
    router = make_router(edge, probe_timeout_ms=1000.0, recovery_probes=1)
    assert wait_for(lambda: edge.probes == 1)  # a probe is in flight; it takes 300 ms
    router.force_local(True)
    router.force_local(False)
    assert wait_for(lambda: edge.probes == 2), router.stats()  # the stale probe ended, a fresh one began
    assert router.state is RouterState.LOCAL
    assert wait_for(lambda: router.state is RouterState.EDGE)
    assert [e.reason for e in router.events] == ["startup", "forced_local", "force_released", "healthy_probe",
                                                 "recovered"]
