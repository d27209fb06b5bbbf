"""Estimates camera frames that were published but never delivered to this subscriber.

A subscriber never hears about a frame the transport dropped, so the estimate comes from the frames
that did arrive:

- With a sequence number at the end of `header.frame_id` (`camera#1234`, as sim_camera writes it),
  every hole in the numbering is a lost frame: exact between the first and the last frame received.
- Otherwise from `header.stamp` and the camera's frame period, measured from the smallest recent
  stamp differences (consecutive frames give those, even when half the frames are lost). A
  difference of about k periods means k - 1 frames are missing.

From stamps, a frame the camera itself skipped (a driver or timer that falls behind its rate) looks
the same as one lost on the way, and is counted; sequence numbers count transport loss only.
What it cannot see: frames lost before the first or after the last one received; frames of a camera
whose rate is not constant (triggered or event-driven publishers); pauses longer than `max_gap_s`
(counted as a pause, not as loss); frames of several publishers interleaved on one topic; and a
frame lost inside the subscriber's own queue (the node counts those itself, as frames_dropped).
A stamp or sequence number going backwards (a restarted camera, a replayed bag) starts the estimate
again and is counted in `restarts`. Plain Python, no ROS: the node feeds it stamps and frame ids.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

SEQUENCE = re.compile(r"^(?P<frame>.*)#(?P<seq>\d+)$")


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
        self.received = self.missing = self.restarts = self.pauses = 0
        self.method = ""
        self._deltas: deque[float] = deque(maxlen=window)
        self._uncounted: list[float] = []  # differences seen before the period was known
        self._last_stamp: float | None = None
        self._last_seq: tuple[str, int] | None = None

    def observe(self, stamp_s: float, frame_id: str = "") -> int:
        """One delivered frame (its header stamp in seconds, its frame_id); returns the frames
        estimated lost just before it."""
        self.received += 1
        frame, seq = split_frame_id(frame_id)
        delta = self._stamp_delta(stamp_s, count_restart=seq is None)
        if seq is not None:
            self.method = "sequence"
            return self._by_sequence(frame, seq)
        self._last_seq = None
        if delta is None:
            return 0
        self.method = "stamps"
        return self._by_stamps(delta)

    def _stamp_delta(self, stamp_s: float, count_restart: bool) -> float | None:
        """The difference to the previous stamp, or None where there is none to use. Stamps of 0
        (a publisher that does not stamp) give nothing; a stamp going backwards is a restart."""
        if stamp_s <= 0.0:
            return None
        previous, self._last_stamp = self._last_stamp, stamp_s
        if previous is None:
            return None
        delta = stamp_s - previous
        if delta <= 0.0:
            self.restarts += count_restart
            self._deltas.clear()
            self._uncounted.clear()
            return None
        if delta <= self.max_gap_s:
            self._deltas.append(delta)
        return delta

    def _by_sequence(self, frame: str, seq: int) -> int:
        previous, self._last_seq = self._last_seq, (frame, seq)
        if previous is None or previous[0] != frame:
            return 0
        if seq <= previous[1]:
            self.restarts += 1
            return 0
        lost = seq - previous[1] - 1
        self.missing += lost
        return lost

    def period_s(self) -> float | None:
        """The camera's frame period. A low percentile of the recent stamp differences belongs to
        consecutive frames even under heavy loss, but jitter pulls it low; the median of the
        differences near it (below 1.5x) is the period itself."""
        if len(self._deltas) < self.warm_up:
            return None
        ordered = sorted(self._deltas)
        low = ordered[int(self.percentile * (len(ordered) - 1))]
        near = [d for d in ordered if d < 1.5 * low]
        return near[len(near) // 2]

    def _by_stamps(self, delta: float) -> int:
        if delta > self.max_gap_s:
            self.pauses += 1
            return 0
        period = self.period_s()
        if period is None:
            self._uncounted.append(delta)
            return 0
        pending, self._uncounted = [*self._uncounted, delta], []
        lost = sum(max(0, round(d / period) - 1) for d in pending)
        self.missing += lost
        return lost

    def snapshot(self) -> LossSnapshot:
        return LossSnapshot(self.received, self.missing, self.restarts, self.pauses, self.period_s(), self.method)


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
