"""One percentile everywhere: nearest rank, so every reported p99 is a latency that was measured."""

from __future__ import annotations

from robot_compress.runtime.latency_stats import LatencyWindow, percentile


def test_nearest_rank_picks_a_measured_sample():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert [percentile(values, q) for q in (0, 1, 50, 99, 100)] == [1.0, 1.0, 50.0, 99.0, 100.0]
    assert percentile([10.0, 30.0], 50) == 10.0 and percentile([10.0, 30.0], 99) == 30.0  # never 20 or 29.8
    assert percentile([], 99) is None


def test_window_keeps_only_the_latest_samples():
    window = LatencyWindow(size=3)
    assert window.percentile(99) is None
    for ms in (500.0, 1.0, 2.0, 3.0):
        window.add(ms)
    assert window.percentile(100) == 3.0 and window.percentile(50) == 2.0
