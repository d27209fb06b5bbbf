"""The perception node's view of frames lost before they reached it: one estimator per input
topic (runtime/transport_loss.py), its counters for /diagnostics, and a throttled warning that
names the likely cause and the fix."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from robot_compress.ros.launch_description import DDS_PROFILE
from robot_compress.runtime.transport_loss import LossSnapshot, TransportLossEstimator, loss_warning

WARNING_PERIOD_S = 30.0
RECENT_S = 2.0  # the window /diagnostics judges transport loss over


class TransportMonitor:
    def __init__(self, logger, topics: dict[str, str], clock: Callable[[], float] = time.monotonic):
        """`topics`: input name (as the node subscribes) -> resolved topic name, for the warning."""
        self._logger, self._topics = logger, topics
        self._estimators = {name: TransportLossEstimator() for name in topics}
        self._lock = threading.Lock()  # observe() runs in the executor, values() in a timer
        self._clock = clock
        # (time, received, missing) totals at each recent() call, reaching back RECENT_S
        self._history: deque[tuple[float, int, int]] = deque([(clock(), 0, 0)])

    def observe(self, name: str, header) -> None:
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        with self._lock:
            estimator = self._estimators[name]
            lost = estimator.observe(stamp, header.frame_id)
            snapshot = estimator.snapshot() if lost else None
        if snapshot is not None:
            self._logger.warning(loss_warning(self._topics[name], snapshot, str(DDS_PROFILE)),
                                 throttle_duration_sec=WARNING_PERIOD_S)

    def snapshots(self) -> dict[str, LossSnapshot]:
        with self._lock:
            return {name: e.snapshot() for name, e in self._estimators.items()}

    def recent(self) -> tuple[int, int]:
        """(received, missing) over the inputs in the last RECENT_S seconds or a little more (since
        the newest earlier call at least that old; the node calls once per diagnostics report), so
        the figure does not depend on how often the node reports. The estimate of frames missing can
        shrink as the measured period settles; such a correction is no new frame."""
        now = self._clock()
        snaps = self.snapshots().values()
        received, missing = sum(s.received for s in snaps), sum(s.missing for s in snaps)
        self._history.append((now, received, missing))
        while now - self._history[1][0] >= RECENT_S:  # keep one entry at least RECENT_S old
            self._history.popleft()
        _, then_received, then_missing = self._history[0]
        return max(0, received - then_received), max(0, missing - then_missing)

    def values(self) -> dict[str, str]:
        """Diagnostics values: totals over the inputs, apart from the node's own queue drops."""
        snaps = self.snapshots().values()
        received, missing = sum(s.received for s in snaps), sum(s.missing for s in snaps)
        periods = [s.period_s for s in snaps if s.period_s is not None]
        methods = sorted({s.method for s in snaps if s.method})
        return {
            "frames_missing_in_transport": str(missing),
            "transport_loss_pct": f"{100 * missing / (received + missing):.2f}" if received + missing else "0.00",
            "transport_loss_method": ",".join(methods),
            "camera_period_ms": f"{1000 * min(periods):.2f}" if periods else "",
            "camera_restarts": str(sum(s.restarts for s in snaps)),
            "camera_pauses": str(sum(s.pauses for s in snaps)),  # gaps over 2 s: not counted as loss
        }
