"""A bounded window of recent latencies with percentiles, for diagnostics (not thread-safe alone)."""

from __future__ import annotations

from collections import deque

import numpy as np


class LatencyWindow:
    """The last `size` samples in milliseconds; percentiles over that window only, so a link that
    recovered is not reported by its worst minute forever."""

    def __init__(self, size: int = 500):
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._samples.append(ms)

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self._samples, float), q)) if self._samples else None
