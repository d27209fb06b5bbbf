"""What every inference backend (local ONNX Runtime, edge gRPC) promises the router.

A backend takes one preprocessed batch and returns logits, or raises `BackendError` with one
of a few failure kinds, so the router can decide what to do without knowing about gRPC.
"""

from __future__ import annotations

import enum
from typing import Protocol

import numpy as np


class FailureKind(str, enum.Enum):
    TIMEOUT = "timeout"  # no answer by the deadline (black hole, slow link, stalled server)
    UNREACHABLE = "unreachable"  # connection refused/reset, DNS, link down
    OVERLOADED = "overloaded"  # server said RESOURCE_EXHAUSTED / UNAVAILABLE under load
    BAD_ANSWER = "bad_answer"  # an answer came but does not match the model contract


class BackendError(Exception):
    """A backend could not produce a valid answer; `kind` says why in router terms."""

    def __init__(self, kind: FailureKind, message: str):
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message


class Backend(Protocol):
    """An inference backend: `infer` maps a preprocessed batch (the manifest's layout) to logits."""

    name: str

    def infer(self, batch: np.ndarray, timeout_s: float | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


class ProbeableBackend(Backend, Protocol):
    """A backend that can also be probed cheaply (the edge, as the router sees it): `probe` returns
    its round trip in seconds or raises `BackendError`."""

    def probe(self, timeout_s: float) -> float: ...
