"""Test doubles for the router's unit tests: in-process backends whose behaviour a test scripts.

They implement the Backend and ProbeableBackend protocols for the router's frame race and prober
only (the circuit breaker's own tests need no backend); the integration tests use the real
LocalBackend, EdgeBackend and edge server.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from robot_compress.runtime.backend import BackendError, FailureKind

EDGE_CLASS, LOCAL_CLASS = 0, 1


def logits_for(batch: np.ndarray, class_id: int) -> np.ndarray:
    out = np.zeros((batch.shape[0], 10), dtype=np.float32)
    out[:, class_id] = 5.0
    return out


class ScriptedEdge:
    """An edge whose answers and probes a test switches at run time.

    mode: "ok" (answer after `delay_s`), "hang" (no answer until timeout, then TIMEOUT, like a
    black hole), a FailureKind (raise it), or "garbage" (wrong shape). `probe_ok`/`probe_delay_s`
    script the probes; `calls`/`probes` count what the router asked.
    """

    name = "edge"

    def __init__(self, mode="ok", delay_s=0.0, probe_ok=True, probe_delay_s=0.0):
        self.mode, self.delay_s = mode, delay_s
        self.probe_ok, self.probe_delay_s = probe_ok, probe_delay_s
        self.calls = self.probes = 0
        self.finished = threading.Event()  # set whenever an infer call returns or raises
        self._lock = threading.Lock()

    def infer(self, batch, timeout_s=None):
        with self._lock:
            self.calls += 1
        try:
            if self.mode == "hang":
                time.sleep(timeout_s)
                raise BackendError(FailureKind.TIMEOUT, "scripted black hole")
            if isinstance(self.mode, FailureKind):
                raise BackendError(self.mode, "scripted failure")
            time.sleep(self.delay_s)
            if self.mode == "garbage":
                return np.zeros((batch.shape[0] + 1, 10), dtype=np.float32)
            return logits_for(batch, EDGE_CLASS)
        finally:
            self.finished.set()

    def probe(self, timeout_s):
        with self._lock:
            self.probes += 1
        time.sleep(min(self.probe_delay_s, timeout_s))
        if not self.probe_ok:
            raise BackendError(FailureKind.UNREACHABLE, "scripted probe failure")
        return self.probe_delay_s

    def close(self):
        pass


class SlowLocal:
    """A local model that takes `delay_s` and answers class LOCAL_CLASS; `fail` makes it raise."""

    name = "local"

    def __init__(self, delay_s=0.002, fail=False):
        self.delay_s, self.fail = delay_s, fail
        self.calls = 0

    def infer(self, batch, timeout_s=None):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("scripted local failure")
        return logits_for(batch, LOCAL_CLASS)

    def close(self):
        pass
