"""The transport-loss estimate from the frames that did arrive: sequence numbers when the frame_id
has them, else stamps and the measured frame period."""

from __future__ import annotations

import numpy as np
import pytest

from robot_compress.runtime.transport_loss import (
    TransportLossEstimator,
    loss_warning,
    split_frame_id,
    with_sequence,
)

RNG = np.random.default_rng(7)


def feed(estimator, stamps, frame_ids=None):
    frame_ids = frame_ids or [""] * len(stamps)
    return [estimator.observe(float(s), f) for s, f in zip(stamps, frame_ids, strict=True)]


def camera_stamps(n: int, rate_hz: float, jitter_s: float = 0.0, start: float = 1000.0) -> np.ndarray:
    return start + np.arange(n) / rate_hz + RNG.uniform(-jitter_s, jitter_s, n)


def test_frame_id_sequence_round_trip():
    assert split_frame_id(with_sequence("camera", 42)) == ("camera", 42)
    assert split_frame_id("camera") == ("camera", None)
    assert split_frame_id("cam#era") == ("cam#era", None)
    assert split_frame_id("a#b#7") == ("a#b", 7)


def test_no_loss_with_jittery_stamps_estimates_none():
    estimator = TransportLossEstimator()
    feed(estimator, camera_stamps(300, 15.0, jitter_s=0.008))  # +-8 ms at a 66.7 ms period
    snap = estimator.snapshot()
    assert (snap.received, snap.missing, snap.restarts, snap.method) == (300, 0, 0, "stamps")
    assert snap.period_s == pytest.approx(1 / 15, rel=0.25)


@pytest.mark.parametrize("loss", [0.05, 0.3, 0.55])
def test_random_loss_is_counted_from_stamps(loss):
    """Even at 55% loss (the default Fast DDS case at 640x480) the period is the consecutive frames'."""
    stamps = camera_stamps(600, 30.0, jitter_s=0.004)
    kept = np.sort(np.concatenate([[0], 1 + np.flatnonzero(RNG.random(599) >= loss)]))  # keep the first
    kept = kept[kept <= kept[-1]]
    estimator = TransportLossEstimator()
    feed(estimator, stamps[kept])
    truly_missing = int(kept[-1] + 1 - len(kept))  # between the first and the last delivered frame
    snap = estimator.snapshot()
    assert snap.received == len(kept)
    assert snap.missing == pytest.approx(truly_missing, rel=0.03, abs=2)
    assert snap.loss_fraction == pytest.approx(truly_missing / (kept[-1] + 1), abs=0.01)


@pytest.mark.parametrize("seed", range(5))
def test_heavy_loss_still_finds_the_period_from_whole_multiples(seed):
    """At 85% loss consecutive frames are rare, and the densest cluster of stamp differences is 2 or
    more periods; the differences are still whole numbers of periods, and the period explains them."""
    rng = np.random.default_rng(seed)
    stamps = 1000.0 + np.arange(600) / 30.0 + rng.uniform(-0.002, 0.002, 600)
    kept = np.concatenate([[0], 1 + np.flatnonzero(rng.random(599) >= 0.85)])
    estimator = TransportLossEstimator()
    feed(estimator, stamps[kept])
    snap = estimator.snapshot()
    assert snap.period_s == pytest.approx(1 / 30, rel=0.03)
    assert snap.missing == pytest.approx(int(kept[-1] + 1 - len(kept)), rel=0.03, abs=2)


def test_gaps_seen_during_warm_up_are_counted_once_the_period_is_known():
    stamps = camera_stamps(40, 10.0)
    kept = [0, 3, *range(4, 40)]  # two frames lost before the period could be measured
    estimator = TransportLossEstimator(warm_up=8)
    results = feed(estimator, stamps[kept])
    assert sum(results) == 2 and estimator.snapshot().missing == 2


def test_stamp_going_backwards_restarts_without_counting_loss():
    estimator = TransportLossEstimator()
    feed(estimator, camera_stamps(50, 15.0, start=5000.0))
    feed(estimator, camera_stamps(50, 15.0, start=10.0))  # camera restarted (or a bag replayed)
    snap = estimator.snapshot()
    assert (snap.missing, snap.restarts, snap.received) == (0, 1, 100)
    lost = feed(estimator, camera_stamps(20, 15.0, start=10.0 + 50 / 15)[[0, 1, 5, 6, 7]])  # 3 lost after the restart
    assert sum(lost) == 3


def test_a_long_pause_is_a_pause_not_lost_frames():
    estimator = TransportLossEstimator(max_gap_s=2.0)
    feed(estimator, np.concatenate([camera_stamps(30, 15.0), camera_stamps(30, 15.0, start=1000.0 + 30 / 15 + 10)]))
    snap = estimator.snapshot()
    assert (snap.missing, snap.pauses) == (0, 1)


def test_unstamped_frames_give_no_estimate():
    estimator = TransportLossEstimator()
    feed(estimator, [0.0] * 50)
    snap = estimator.snapshot()
    assert (snap.received, snap.missing, snap.method, snap.period_s) == (50, 0, "", None)


def test_sequence_numbers_count_exactly_even_with_irregular_stamps():
    seqs = [0, 1, 2, 5, 6, 10, 11]  # 2 + 3 lost
    stamps = 100.0 + RNG.uniform(0, 5, len(seqs)).cumsum()  # not a fixed rate: stamps alone would not tell
    estimator = TransportLossEstimator()
    lost = feed(estimator, stamps, [with_sequence("camera", s) for s in seqs])
    assert lost == [0, 0, 0, 2, 0, 3, 0]
    snap = estimator.snapshot()
    assert (snap.missing, snap.method, snap.restarts) == (5, "sequence", 0)


def test_sequence_restart_is_counted_once_and_not_as_loss():
    estimator = TransportLossEstimator()
    stamps = camera_stamps(20, 10.0)
    feed(estimator, stamps[:10], [with_sequence("camera", s) for s in range(100, 110)])
    # the camera restarts: numbering from 0 again, and its clock from an earlier time
    feed(estimator, stamps[:10] - 50, [with_sequence("camera", s) for s in (0, 1, 2, 4, 5, 6, 7, 8, 9, 10)])
    snap = estimator.snapshot()
    assert (snap.restarts, snap.missing) == (1, 1)


def test_warning_names_the_count_the_cause_and_the_fix():
    estimator = TransportLossEstimator()
    feed(estimator, [1.0, 2.0, 3.0], [with_sequence("camera", s) for s in (0, 1, 4)])
    text = loss_warning("/camera/image_raw", estimator.snapshot(), "/opt/share/robot_compress/config/fastdds.xml")
    assert "2 of 5 frames on /camera/image_raw (40.0%)" in text
    assert "FASTRTPS_DEFAULT_PROFILES_FILE=/opt/share/robot_compress/config/fastdds.xml" in text
    assert "sequence numbers" in text and "camera driver" in text


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="warm_up"):
        TransportLossEstimator(window=4, warm_up=8)


def test_late_timer_callbacks_are_not_lost_frames():
    """A loaded publisher stamps when its timer callback runs: up to 0.6 periods late, the next one on
    time again. A late stamp followed by an early-looking one is no lost frame."""
    period = 1 / 15
    nominal = 1000.0 + np.arange(300) * period
    stamps = nominal + RNG.uniform(0, 0.6 * period, 300) * (RNG.random(300) < 0.3)
    estimator = TransportLossEstimator()
    feed(estimator, stamps)
    assert estimator.snapshot().missing <= 1
    kept = np.flatnonzero(RNG.random(300) >= 0.5)
    estimator = TransportLossEstimator()
    feed(estimator, stamps[kept])
    assert estimator.snapshot().missing == pytest.approx(kept[-1] - kept[0] + 1 - len(kept), abs=2)


def test_a_camera_halving_its_rate_looks_like_loss_only_until_the_period_follows():
    """Half the frames at the old period is what 50% loss looks like; once the recent differences
    are mostly the new period (within a window of 64), the estimate follows and counts no more."""
    estimator = TransportLossEstimator(window=64)
    first = camera_stamps(100, 30.0, jitter_s=0.002)
    second = first[-1] + (1 + np.arange(200)) / 15.0
    feed(estimator, np.concatenate([first, second[:100]]))
    during = estimator.snapshot().missing
    assert during <= 64
    feed(estimator, second[100:])
    snap = estimator.snapshot()
    assert snap.missing == during and snap.period_s == pytest.approx(1 / 15, rel=0.05)
