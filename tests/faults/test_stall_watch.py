"""StallWatch sees a stall it is made to suffer: the GIL held by a busy loop that the interpreter is
told not to interrupt keeps the watching thread from waking, as a stopped VM would."""

from __future__ import annotations

import sys
import time

from robot_compress.faults.stall_watch import StallWatch


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_thread_kept_from_running_is_recorded_with_when_and_how_long():
    interval = sys.getswitchinterval()
    with StallWatch(threshold_ms=50.0) as watch:
        time.sleep(0.05)  # the watcher is asleep in its tick when the GIL is taken
        sys.setswitchinterval(5.0)
        try:
            began = time.time()
            busy(0.3)
        finally:
            sys.setswitchinterval(interval)
        time.sleep(0.05)
    assert watch.worst_ms >= 200.0, watch.stalls
    wall, ms = max(watch.stalls, key=lambda stall: stall[1])
    assert began - 0.1 <= wall <= began + 0.05 and ms == watch.worst_ms


def test_the_watcher_stops_with_its_block():
    with StallWatch() as watch:
        time.sleep(0.02)
    assert not watch._thread.is_alive()
