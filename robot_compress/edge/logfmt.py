"""The edge server's log: one `key=value` line per event, safe against what the network sends.

Values that come from clients (model names, method paths, error details) go through `clean`,
so a newline cannot forge a log line and a 15 MB name cannot fill the disk. Events a client can
trigger at will go through `Throttle`, which lets a burst through and then summarises with a count.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

MAX_LOGGED_CHARS = 120  # of any one value taken from a request


def shorten(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """`value` escaped to printable ASCII and cut to `limit` characters, with a note of the cut:
    also for error messages sent back to a client, so echoing a huge name stays under gRPC's
    metadata size limit."""
    text = str(value)
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    return escaped + (f"...(+{len(text) - limit} chars)" if len(text) > limit else "")


def clean(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """`value` as one quoted log token: escaped, cut (see `shorten`), its quotes escaped."""
    return '"' + shorten(value, limit).replace('"', '\\"') + '"'


class Throttle:
    """Per event name, a token bucket: `burst` lines at once, then `per_s` lines a second.
    `admit(event)` returns None to drop the line, or how many lines of that event were dropped
    since the last one let through (report it, so floods stay visible)."""

    def __init__(self, burst: int = 20, per_s: float = 1.0):
        self.burst, self.per_s = burst, per_s
        self._state: dict[str, list[float]] = {}  # event -> [tokens, last refill, dropped]
        self._lock = threading.Lock()

    def admit(self, event: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            tokens, last, dropped = self._state.get(event, (float(self.burst), now, 0))
            tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
            if tokens < 1.0:
                self._state[event] = [tokens, now, dropped + 1]
                return None
            self._state[event] = [tokens - 1.0, now, 0]
            return int(dropped)


class KeyValueFormatter(logging.Formatter):
    """One line per event: `ts=... level=... logger=... event=... key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={stamp} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + clean(self.formatException(record.exc_info), 4000)
        return line


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("robot_compress")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
