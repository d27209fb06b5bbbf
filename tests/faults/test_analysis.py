"""The fault analysis's own arithmetic, on hand-written records (the scenarios run it for real)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from robot_compress.faults.analysis import Bounds, ScenarioMetrics, analyze, local_dwells, violations
from robot_compress.faults.experiment import RunConfig, RunRecord
from robot_compress.faults.scenarios import BLACKHOLE, scenarios


def event(t, previous, state):
    return {"kind": "event", "t": t, "previous": previous, "state": state, "reason": "", "detail": ""}


def test_a_dwell_runs_from_each_failover_to_the_next_return_to_the_edge():
    records = [event(9.0, None, "local"), event(9.5, "local", "probing"), event(10.0, "probing", "edge"),
               event(11.0, "edge", "local"), event(11.3, "local", "probing"), event(11.4, "probing", "local"),
               event(11.6, "local", "probing"), event(11.85, "probing", "edge"),
               event(12.0, "edge", "local"), event(12.8, "local", "probing"), event(13.1, "probing", "edge")]
    assert local_dwells(records, t0=10.5) == pytest.approx([850.0, 1100.0])


def test_dwells_use_event_stamps_not_arrival_order_and_skip_failovers_before_t0():
    records = [event(5.0, "edge", "local"), event(6.0, "probing", "edge"),
               event(8.0, "probing", "edge"), event(7.0, "edge", "local")]  # published out of order
    assert local_dwells(records, t0=6.5) == pytest.approx([1000.0])


def blackhole_run(**values) -> ScenarioMetrics:
    base = {f.name: None for f in fields(ScenarioMetrics)}
    base.update(scenario="slow_link", fault_class=BLACKHOLE, lost=0, duplicated=0, out_of_order=0,
                fault_latency_max_ms=67.15, back_to_edge_ms=389.0)
    return ScenarioMetrics(**{**base, **values})


BOUNDS = Bounds(blackhole_ms=72.85, refused_ms=50.0, recovery_ms=1750.0, min_dwell_ms=750.0)


@pytest.mark.parametrize("node_ms, stamp_ms, missed", [
    (67.5, 73.05, False),  # CI's slow_link run: ~6 ms of camera transport before the node had the frame
    (73.0, 74.0, True),  # the node's own part too slow
    (None, 73.05, True),  # a node without received_at is held to the stamp-based time
    (None, 70.0, False),
])
def test_the_black_hole_bound_counts_from_the_node_receiving_the_frame(node_ms, stamp_ms, missed):
    problems = violations(blackhole_run(first_hit_node_ms=node_ms, first_hit_answered_ms=stamp_ms), BOUNDS)
    assert bool(problems) == missed, problems


def test_the_bounds_use_the_deadline_the_node_will_use():
    """A run that leaves deadline_ms unset gets the local model's task default, as the node does."""
    from robot_compress.faults.experiment import DETECTION_LOCAL_MODEL, DETECTION_NODE_PARAMS, RunConfig

    source = Path("unused")
    assert RunConfig(source=source).router_value("deadline_ms") == 60.0
    detection = RunConfig(source=source, local_model=DETECTION_LOCAL_MODEL, node_params=dict(DETECTION_NODE_PARAMS))
    assert detection.router_value("deadline_ms") == 250.0
    assert RunConfig(source=source, node_params={"deadline_ms": 90.0}).router_value("deadline_ms") == 90.0


def result(stamp: float, received_at: float, answered_at: float, backend: str, latency_ms: float) -> dict:
    sec, nanosec = int(stamp), round((stamp % 1) * 1e9)
    return {"kind": "result", "t": answered_at + 0.003, "stamp": {"sec": sec, "nanosec": nanosec},
            "received_at": received_at, "answered_at": answered_at, "backend": backend,
            "latency_ms": latency_ms, "edge_failure": "timeout" if latency_ms > 60 else None}


def test_a_frame_already_sent_when_the_reset_lands_is_held_to_the_black_hole_bound_not_the_refusal_one():
    """A reset rule cannot reset a request that is already out: that frame waits for its deadline.
    The refusal bound applies from the first frame the node receives once the rule is in effect."""
    reject = next(s for s in scenarios() if s.name == "reject")
    fault = 100.0
    records = [result(99.948, 99.950, 99.957, "edge", 7.0),
               result(99.997, 99.998, fault + 0.064, "local", 64.0),  # in flight: deadline, then local
               result(100.047, 100.049, 100.066, "local", 16.0),  # queued behind it, refused at once
               result(100.097, 100.099, 100.103, "local", 4.0)]
    run = RunRecord(reject, RunConfig(source=Path("unused")), records, [(fault, "reject"), (fault + 2, "clear")],
                    t0=99.948, directory=Path("unused"))
    metrics = analyze(run)
    assert metrics.first_hit_node_ms == pytest.approx(17.0)
    assert [p for p in violations(metrics, BOUNDS) if "refusal" in p or "during the fault" in p] == []
    records[1].update(answered_at=fault + 0.080, latency_ms=80.0)  # past deadline + local p99 + 10 ms
    assert any("during the fault" in p for p in violations(analyze(run), BOUNDS))
