"""The test machine's own stalls, measured beside a fault run so they are not blamed on the robot.

A fault run's bounds are tens of milliseconds. They hold on a machine that runs its processes; a
virtual machine that stops all of them for 200 ms (CPU steal, a noisy neighbour) breaks any bound,
whatever the router does. A thread that asks to sleep `tick_s` and wakes late by more than
`threshold_ms` has seen such a stall: the node, the edge and the camera stood still with it.
"""

from __future__ import annotations

import threading
import time

# A stall this long breaks the fault bounds by itself (they are deadline + tens of ms) and can
# overflow the node's frame queue at camera rates: runs that saw one are judged again (tests).
SIGNIFICANT_STALL_MS = 100.0


class StallWatch:
    """Context manager: a daemon thread that records every late wake-up over `threshold_ms` as
    (wall-clock time it began, milliseconds late)."""

    def __init__(self, tick_s: float = 0.005, threshold_ms: float = 50.0):
        self.tick_s, self.threshold_ms = tick_s, threshold_ms
        self.stalls: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def worst_ms(self) -> float:
        return max((ms for _, ms in self.stalls), default=0.0)

    def _watch(self) -> None:
        while not self._stop.is_set():
            wall, start = time.time(), time.monotonic()
            self._stop.wait(self.tick_s)
            late_ms = (time.monotonic() - start - self.tick_s) * 1000
            if late_ms > self.threshold_ms:
                self.stalls.append((wall, late_ms))
