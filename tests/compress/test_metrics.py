"""Interleaved latency sampling: the calls take turns, warm-up calls are not timed, each call gets
its own input, and the samples are wall times in milliseconds."""

from __future__ import annotations

import time

import pytest

from robot_compress.compress.metrics import interleaved_latency_ms, interleaved_samples_ms
from tests.conftest import EDGE_MODEL


def test_calls_take_turns_round_by_round_after_their_warm_up():
    order: list[str] = []
    samples = interleaved_samples_ms([order.append, order.append], feed=["a", "b"], rounds=3, runs=2, warmup=1)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3
    assert [len(times) for times in samples] == [6, 6]


def test_samples_are_each_calls_wall_time_in_milliseconds():
    fast, slow = interleaved_samples_ms([time.sleep, time.sleep], feed=[0.0, 0.02], rounds=2, runs=1)
    assert min(slow) >= 20.0 and min(fast) < min(slow)


def test_every_call_needs_its_input():
    with pytest.raises(ValueError):
        interleaved_samples_ms([print, print], feed=["only one"], rounds=1, runs=1)


def test_onnx_files_are_timed_through_the_shared_sampling():
    (timing,) = interleaved_latency_ms([EDGE_MODEL / "1" / "model.onnx"], (3, 32, 32), threads=1, warmup=1,
                                       runs=4, rounds=2)
    assert 0 < timing["p50"] <= timing["p95"]
