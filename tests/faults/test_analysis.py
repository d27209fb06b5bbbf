"""The fault analysis's own arithmetic, on hand-written records (the scenarios run it for real)."""

from __future__ import annotations

import pytest

from robot_compress.faults.analysis import local_dwells


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
