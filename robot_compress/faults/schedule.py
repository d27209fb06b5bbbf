"""Script a fault proxy's link over time, without namespaces or root: what the demo plays.

`ScheduledLink(proxy, changes).start()` applies each `LinkChange` at its time (seconds after
start) in a background thread and records when each took effect, so a timeline can shade it.
`proxy` is a FaultProxy in this process or a ProxyClient for one in another.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from robot_compress.faults.proxy import Mode


@dataclass(frozen=True)
class LinkChange:
    at_s: float
    mode: str = Mode.PASS.value
    both: dict[str, Any] | None = None  # shaping for both directions, e.g. {"latency_ms": 80}

    def __post_init__(self) -> None:
        Mode(self.mode)  # a typo fails here, not minutes into a run


def blackhole_then_flap(start_s: float = 5.0, blackhole_s: float = 10.0, recover_s: float = 5.0,
                        flap_s: float = 10.0, low_s: float = 0.5, high_s: float = 2.0,
                        seed: int = 8) -> list[LinkChange]:
    """A black hole, a pause on a healthy link, then flapping (black hole / pass) for `flap_s`."""
    changes = [LinkChange(start_s, "blackhole"), LinkChange(start_s + blackhole_s, "pass")]
    rng, t = random.Random(seed), start_s + blackhole_s + recover_s
    end, down = t + flap_s, True
    while t < end:
        changes.append(LinkChange(round(t, 3), "blackhole" if down else "pass"))
        t, down = t + rng.uniform(low_s, high_s), not down
    changes.append(LinkChange(round(min(t, end), 3), "pass"))
    return changes


@dataclass
class ScheduledLink:
    proxy: Any  # FaultProxy or ProxyClient: anything with update(mode=..., both=...)
    changes: list[LinkChange]
    applied: list[tuple[float, LinkChange]] = field(default_factory=list)  # (wall time, change)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ScheduledLink:
        self._thread = threading.Thread(target=self._run, name="scheduled-link", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        try:
            for change in sorted(self.changes, key=lambda c: c.at_s):
                if self._stop.wait(max(0.0, start + change.at_s - time.monotonic())):
                    return
                self.proxy.update(mode=change.mode, both=change.both)
                self.applied.append((time.time(), change))
        finally:
            self.proxy.update(mode=Mode.PASS.value)  # never leave the link broken behind us

    def stop(self) -> None:
        """End early; the link is set back to pass."""
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
