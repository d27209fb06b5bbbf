"""Latency percentiles: one definition for /diagnostics, the fault reports and the benchmarks, and
a bounded window of recent latencies (not thread-safe alone)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest sample with at least q % of the samples at or below it,
    so a reported p99 is a latency that was measured. None without samples."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class LatencyWindow:
    """The last `size` samples in milliseconds; percentiles over that window only, so a link that
    recovered is not reported by its worst minute forever."""

    def __init__(self, size: int = 500):
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._samples.append(ms)

    def percentile(self, q: float) -> float | None:
        return percentile(self._samples, q)
