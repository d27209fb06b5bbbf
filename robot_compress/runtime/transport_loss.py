"""Estimates camera frames that were published but never delivered to this subscriber.

A subscriber never hears about a frame the transport dropped, so the estimate comes from the frames
that did arrive:

- With a sequence number at the end of `header.frame_id` (`camera#1234`, as sim_camera writes it),
  every hole in the numbering is a lost frame: exact between the first and the last frame received.
- Otherwise from `header.stamp` and the camera's frame period, measured as the most common recent
  stamp difference (consecutive frames give it, even when most frames are lost). A difference of
  about k periods means k - 1 frames are missing.

From stamps, a frame the camera itself skipped (a driver or timer that falls behind its rate) looks
the same as one lost on the way, and is counted; so do the frames of a camera that lowers its rate,
until the recent differences (a window of 64) follow the new period. Beyond about 60% loss the densest
cluster of differences can be 2 or more periods; from 24 differences on, the period is then found as
the fraction of that cluster that explains nearly all differences (up to about 85% loss in simulation;
fewer differences, or heavier loss, and the loss is underestimated). Sequence numbers count transport
loss only.
What it cannot see: frames lost before the first or after the last one received; frames of a camera
whose rate is not constant (triggered or event-driven publishers); pauses longer than `max_gap_s`
(counted as a pause, not as loss); frames of several publishers interleaved on one topic; and a
frame lost inside the subscriber's own queue (the node counts those itself, as frames_dropped).
A stamp or sequence number going backwards (a restarted camera, a replayed bag) starts the estimate
again and is counted in `restarts`. Plain Python, no ROS: the node feeds it stamps and frame ids.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass

SEQUENCE = re.compile(r"^(?P<frame>.*)#(?P<seq>\d+)$")
# A period explains the stamp differences when FIT_SHARE of them lie within FIT_TOLERANCE periods
# of a whole number of periods; MAX_DIVISOR bounds how many periods the densest cluster may span.
FIT_TOLERANCE, FIT_SHARE, MAX_DIVISOR = 0.15, 0.9, 12
DIVIDE_MIN_DELTAS, DIVIDE_MAX_FIT = 24, 0.7  # a cluster is divided only with this many differences, this badly explained


def split_frame_id(frame_id: str) -> tuple[str, int | None]:
    """(frame, sequence number) of `frame#123`; (frame_id, None) without a number."""
    match = SEQUENCE.match(frame_id)
    if match is None:
        return frame_id, None
    return match.group("frame"), int(match.group("seq"))


def with_sequence(frame_id: str, seq: int) -> str:
    """The frame_id a publisher writes to let subscribers count lost frames exactly."""
    return f"{frame_id}#{seq}"


@dataclass(frozen=True)
class LossSnapshot:
    received: int  # frames seen by the estimator
    missing: int  # frames estimated lost before they reached the subscriber
    restarts: int  # times the stamps or sequence numbers went backwards and the estimate started again
    pauses: int  # gaps longer than max_gap_s, not counted as loss
    period_s: float | None  # measured frame period (None until enough frames arrived)
    method: str  # "sequence", "stamps" or "" (nothing to go on yet)

    @property
    def loss_fraction(self) -> float:
        """missing / (received + missing): the share of published frames that never arrived."""
        total = self.received + self.missing
        return self.missing / total if total else 0.0


class TransportLossEstimator:
    """Feed it every frame as it arrives (`observe`); read `snapshot()`. Not thread-safe: one
    subscription callback feeds one estimator."""

    def __init__(self, window: int = 64, warm_up: int = 8, percentile: float = 0.1, max_gap_s: float = 2.0):
        if warm_up < 2 or window < warm_up:
            raise ValueError(f"need 2 <= warm_up <= window, got warm_up={warm_up}, window={window}")
        self.window, self.warm_up, self.percentile, self.max_gap_s = window, warm_up, percentile, max_gap_s
        self.received = self.restarts = self.pauses = 0
        self.method = ""
        self._deltas: deque[float] = deque(maxlen=window)
        self._period: float | None = None  # period_s() of the current _deltas; None: not computed yet
        self._last_stamp: float | None = None
        self._last_seq: tuple[str, int] | None = None
        self._by_seq = 0  # frames missing in the sequence numbers
        self._by_stamp = 0  # frames missing between stamps that left the window
        # The window's stamp differences are counted with the latest period each time, so an early,
        # rough period (few differences yet) never sticks; a difference is settled as it leaves.
        self._pending: deque[float] = deque()

    @property
    def missing(self) -> int:
        return self._by_seq + self._count(self._pending, self._by_stamp)

    def _count(self, deltas, start: int) -> int:
        """A difference of k periods is k - 1 missing frames. A difference of about 0 periods takes
        one back: a late stamp (a publisher whose timer fell behind) followed by one on time again
        is no lost frame. Rounding each difference on its own keeps a slightly wrong period from
        adding up over a long run."""
        if not deltas:
            return start
        period = self.period_s()
        total = start
        if period is not None:
            for d in deltas:
                total = max(0, total + round(d / period) - 1)
        return total

    def observe(self, stamp_s: float, frame_id: str = "") -> int:
        """One delivered frame (its header stamp in seconds, its frame_id); returns the frames
        newly estimated lost before it."""
        self.received += 1
        before = self.missing
        frame, seq = split_frame_id(frame_id)
        if seq is not None:
            self.method = "sequence"
            self._track_stamp(stamp_s, count=False)
            self._by_sequence(frame, seq)
        else:
            self._last_seq = None
            if self._track_stamp(stamp_s, count=True):
                self.method = "stamps"
        return max(0, self.missing - before)

    def _track_stamp(self, stamp_s: float, count: bool) -> bool:
        """Follow the stamps: the period always, the loss when `count`. Stamps of 0 (a publisher that
        does not stamp) give nothing; a stamp going backwards is a restart, a long gap a pause."""
        if stamp_s <= 0.0:
            return False
        previous, self._last_stamp = self._last_stamp, stamp_s
        if previous is None:
            return False
        delta = stamp_s - previous
        if delta <= 0.0:
            self.restarts += count
            self._by_stamp = self._count(self._pending, self._by_stamp)
            self._pending.clear()
            self._deltas.clear()
            self._period = None
            return False
        if delta > self.max_gap_s:
            self.pauses += count
            return False
        self._deltas.append(delta)
        self._period = None
        if count:
            self._by_stamps(delta)
        return True

    def _by_sequence(self, frame: str, seq: int) -> None:
        previous, self._last_seq = self._last_seq, (frame, seq)
        if previous is None or previous[0] != frame:
            return
        if seq <= previous[1]:
            self.restarts += 1
            return
        self._by_seq += seq - previous[1] - 1

    def period_s(self) -> float | None:
        """The camera's frame period from the recent stamp differences: the shortest of their dense
        clusters (within +-20%). Consecutive frames give the most common difference even when most
        frames are lost (lost frames spread the others over 2, 3, ... periods), and a late stamp
        moves only its own two differences."""
        if len(self._deltas) < self.warm_up:
            return None
        if self._period is None:  # computed once per new stamp, however often it is asked for
            self._period = self._whole_fraction(self._cluster_period())
        return self._period

    def _cluster_period(self) -> float:
        ordered = sorted(self._deltas)
        counts = [bisect_right(ordered, 1.2 * d) - bisect_left(ordered, 0.8 * d) for d in ordered]
        # the shortest well-populated cluster: under heavy loss 2 or 3 periods can come close in count
        first = next(i for i, n in enumerate(counts) if n >= 0.5 * max(counts))
        end = bisect_right(ordered, 1.5 * ordered[first])
        centre = ordered[max(range(first, end), key=counts.__getitem__)]  # that cluster's densest point
        near = ordered[bisect_left(ordered, 0.8 * centre):bisect_right(ordered, 1.2 * centre)]
        return near[len(near) // 2]

    def _fit(self, period: float) -> float:
        """The share of recent differences within FIT_TOLERANCE periods of a whole number (>= 1) of periods."""
        near = [abs(d / period - round(d / period)) <= FIT_TOLERANCE and round(d / period) >= 1 for d in self._deltas]
        return sum(near) / len(near)

    def _whole_fraction(self, cluster: float) -> float:
        """The period, when the densest cluster is a multiple of it. Under heavy loss (over about 80%)
        consecutive frames are rare and the clusters of 2, 3, ... periods outgrow the one of a single
        period; the stamp differences are still whole numbers of periods, so the period is the largest
        cluster / m (m = 2..MAX_DIVISOR), refined by least squares, that explains nearly all of them.
        A cluster that already explains them (the usual case) is kept: a smaller period explains
        jittery or late stamps worse, never better."""
        # Late stamps (a publisher whose timer fell behind) also leave differences the cluster does not
        # explain, and in a handful of them some can sit near half periods by chance. Missing frames
        # leave far more unexplained (half of them or so for a cluster of two periods): divide only
        # on such evidence, from enough differences.
        if len(self._deltas) < DIVIDE_MIN_DELTAS or self._fit(cluster) > DIVIDE_MAX_FIT:
            return cluster
        for m in range(2, MAX_DIVISOR + 1):
            candidate = cluster / m
            for _ in range(2):  # the cluster's centre carries its jitter, m times over: fit to every difference
                counts = [max(1, round(d / candidate)) for d in self._deltas]
                candidate = sum(d * n for d, n in zip(self._deltas, counts, strict=True)) / sum(n * n for n in counts)
            if self._fit(candidate) >= FIT_SHARE:
                return candidate
        return cluster

    def _by_stamps(self, delta: float) -> None:
        self._pending.append(delta)
        if len(self._pending) > self.window:
            self._by_stamp = self._count([self._pending.popleft()], self._by_stamp)

    def snapshot(self) -> LossSnapshot:
        return LossSnapshot(self.received, self.missing, self.restarts, self.pauses, self.period_s(), self.method)


# When frames lost in transport in the last few seconds make the node say WARN. Fast DDS' default
# settings lose about half of camera-sized frames; a stamp-based estimate can count a tick the
# camera skipped itself, so one frame is not enough to alarm anyone.
WARN_MIN_FRAMES = 2
WARN_MIN_FRACTION = 0.05


def loss_is_alarming(received: int, missing: int) -> bool:
    """Whether `missing` frames lost among `received + missing` published recently deserve a WARN
    on /diagnostics."""
    return missing >= WARN_MIN_FRAMES and missing >= WARN_MIN_FRACTION * (received + missing)


LIKELY_CAUSE = (
    "most likely the DDS transport: with Fast DDS' default settings, camera-sized frames between processes "
    "go over fragmented UDP (they do not fit the default shared-memory segment) and best-effort frames lose "
    "fragments. Fix: start both the camera driver and this node with "
    "FASTRTPS_DEFAULT_PROFILES_FILE={profile} (e.g. SetEnvironmentVariable in your own launch file), or "
    "subscribe to the camera's image_transport compressed topic; `robot-compress check-camera TOPIC` measures "
    "it. See docs/DEPLOY.md.")


def loss_warning(topic: str, snapshot: LossSnapshot, profile: str) -> str:
    """The warning for frames lost before they reached the node: how many, how it knows, why, and the fix."""
    how = "sequence numbers in frame_id" if snapshot.method == "sequence" else "header stamps and frame period"
    return (f"{snapshot.missing} of {snapshot.received + snapshot.missing} frames on {topic} "
            f"({100 * snapshot.loss_fraction:.1f}%) never reached this node (estimated from {how}); "
            + LIKELY_CAUSE.format(profile=profile))
