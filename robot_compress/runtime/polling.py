"""Waiting for a condition that another thread or process makes true: one poll loop for all."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str = "the condition", interval_s: float = 0.02,
               detail: Callable[[], object] | None = None) -> T:
    """The first truthy value of `predicate()`, checked every `interval_s`; TimeoutError naming
    `what` (and `detail()`, when given) if none comes within `timeout_s`. Checked once more at
    the deadline, so a slow last sleep does not turn a success into a timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}"
                               + (f": {detail()}" if detail is not None else ""))
        time.sleep(min(interval_s, remaining))
