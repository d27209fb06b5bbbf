"""A bounded hand-off between the ROS executor thread and the inference thread.

When inference cannot keep up, the oldest waiting frame is dropped so the newest one is classified
next (a robot wants to know what is in front of it now), and every drop is counted: frames still
waiting at close and frames put after it are dropped too, so every frame put is either got or dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class LatestFrameQueue:
    def __init__(self, size: int = 1):
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self._items: deque[Any] = deque()
        self._size = size
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> None:
        """Never blocks: a full queue loses its oldest item; a closed one drops the new item."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            if len(self._items) >= self._size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest waiting item, or None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Wake every get(); the items still waiting are dropped and counted."""
        with self._cond:
            self._closed = True
            self.dropped += len(self._items)
            self._items.clear()
            self._cond.notify_all()
