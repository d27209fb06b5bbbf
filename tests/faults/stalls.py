"""A stall of this whole process, as a stopped VM would cause one (for the StallWatch tests)."""

from __future__ import annotations

import sys
import time


def stall_this_process(seconds: float) -> float:
    """Keep every other thread of this process from running for `seconds`; returns when it began."""
    time.sleep(0.05)  # a watcher is asleep in its tick when the GIL is taken
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        began = time.time()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    finally:
        sys.setswitchinterval(interval)
    return began
