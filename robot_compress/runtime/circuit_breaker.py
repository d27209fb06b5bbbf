"""The router's circuit breaker: which backend the next frame goes to, and when to probe the edge.

States:
  EDGE     frames go to the edge. `failure_threshold` consecutive edge failures -> LOCAL.
  LOCAL    circuit open: frames are answered locally; the edge is probed every `probe_period_ms`,
           the first probe one full period after the failover (hysteresis). A healthy probe -> PROBING.
  PROBING  half-open: frames still answered locally; `recovery_probes` consecutive healthy probes
           (each within `max_edge_latency_ms` when set) -> EDGE, an unhealthy one -> LOCAL.
It starts in LOCAL (reason "startup"): the link is trusted only once probes say so. An operator's
`force_local` holds it in LOCAL with probing stopped until released.

A plain state machine: no threads, locks or sleeping. The caller feeds it edge and probe outcomes
(under its own lock), reads `next_probe_at` to schedule probes, and emits the events it returns.
The clocks are passed in, so tests drive it with a fake clock.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from robot_compress.runtime.perception_config import RouterConfig


class RouterState(str, enum.Enum):
    EDGE = "edge"
    LOCAL = "local"
    PROBING = "probing"


# Event reasons besides the FailureKind values (timeout, unreachable, overloaded, bad_answer).
STARTUP = "startup"
NO_EDGE = "no_edge"
SLOW = "slow"  # a probe answered, but slower than max_edge_latency_ms
HEALTHY_PROBE = "healthy_probe"
RECOVERED = "recovered"
FORCED_LOCAL = "forced_local"
FORCE_RELEASED = "force_released"
OPERATOR = "operator request"

EVENT_HISTORY = 50


@dataclass(frozen=True)
class RouterEvent:
    """A state change, or an operator's force_local request (then `state` may equal `previous`):
    when (wall clock, for logs and messages), from what, to what, and why."""

    time: float
    previous: RouterState | None
    state: RouterState
    reason: str
    detail: str = ""


class CircuitBreaker:
    """EDGE/LOCAL/PROBING from edge results and probe results. `clock` (monotonic seconds) schedules
    probes; `wall_clock` stamps events. `has_edge` False: LOCAL for good, never a probe."""

    def __init__(self, config: RouterConfig, has_edge: bool = True, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.config = config
        self.has_edge = has_edge
        self._clock, self._wall_clock = clock, wall_clock
        self.state = RouterState.LOCAL
        self.forced = False
        self.failovers = 0
        self.last_probe_ms: float | None = None
        self.events: deque[RouterEvent] = deque(maxlen=EVENT_HISTORY)
        self._consecutive_failures = 0
        self._healthy_probes = 0
        self._generation = 0  # bumped by force_local: a probe started before it does not count
        self._next_probe = clock() + self._period
        self._record(RouterEvent(wall_clock(), None, RouterState.LOCAL, STARTUP if has_edge else NO_EDGE))

    @property
    def _period(self) -> float:
        return self.config.probe_period_ms / 1000.0

    # --- edge calls -----------------------------------------------------------------------------

    def edge_succeeded(self) -> None:
        self._consecutive_failures = 0

    def edge_failed(self, reason: str, detail: str = "") -> RouterEvent | None:
        """Count one failed edge call; returns the failover it causes, if any."""
        self._consecutive_failures += 1
        if self.state is RouterState.EDGE and self._consecutive_failures >= self.config.failure_threshold:
            return self._transition(RouterState.LOCAL, reason, detail)
        return None

    # --- probes ---------------------------------------------------------------------------------

    @property
    def next_probe_at(self) -> float | None:
        """When the next probe is due (clock time; may be in the past), or None: no probing now."""
        if not self.has_edge or self.forced or self.state is RouterState.EDGE:
            return None
        return self._next_probe

    def start_probe(self) -> int:
        """A probe starts now; the next is due one period after this one was. Returns the token to
        pass to `probe_finished`."""
        self._next_probe = max(self._next_probe + self._period, self._clock())
        return self._generation

    def probe_finished(self, token: int, latency_ms: float | None, failure: str | None = None,
                       detail: str = "") -> list[RouterEvent]:
        """The outcome of the probe started with `token`: `latency_ms` when it answered, else the
        `failure` reason. A probe that answered slower than max_edge_latency_ms is unhealthy."""
        self.last_probe_ms = latency_ms
        if token != self._generation or self.forced or self.state is RouterState.EDGE:
            return []
        limit = self.config.max_edge_latency_ms
        if failure is None and limit and latency_ms > limit:
            failure, detail = SLOW, f"probe took {latency_ms:.1f} ms > {limit:g} ms"
        events = []
        if failure is None:
            self._healthy_probes += 1
            if self.state is RouterState.LOCAL:
                events.append(self._transition(RouterState.PROBING, HEALTHY_PROBE, f"probe {latency_ms:.1f} ms"))
            if self._healthy_probes >= self.config.recovery_probes:
                events.append(self._transition(RouterState.EDGE, RECOVERED,
                                               f"{self._healthy_probes} healthy probes, last {latency_ms:.1f} ms"))
        else:
            self._healthy_probes = 0
            if self.state is RouterState.PROBING:
                events.append(self._transition(RouterState.LOCAL, failure, detail))
        return [event for event in events if event is not None]

    # --- operator -------------------------------------------------------------------------------

    def force_local(self, enabled: bool) -> RouterEvent:
        """Hold LOCAL with probing stopped, or release: then probing resumes a period later and the
        edge must earn `recovery_probes` healthy probes again, none of them a probe in flight at the
        request. Every request is an event, also when the state does not change."""
        reason = FORCED_LOCAL if enabled else FORCE_RELEASED
        self.forced = enabled
        self._generation += 1
        event = self._transition(RouterState.LOCAL, reason, OPERATOR) if enabled else None
        if event is None:
            event = self._record(RouterEvent(self._wall_clock(), self.state, self.state, reason, OPERATOR))
        self._healthy_probes = 0
        if not enabled:
            self._next_probe = self._clock() + self._period
        return event

    # --- internals ------------------------------------------------------------------------------

    def _transition(self, state: RouterState, reason: str, detail: str = "") -> RouterEvent | None:
        previous = self.state
        if state is previous:
            return None
        self.state = state
        if state is not RouterState.PROBING:
            self._healthy_probes = 0
        self._consecutive_failures = 0
        if previous is RouterState.EDGE:
            self.failovers += 1
            self._next_probe = self._clock() + self._period  # hysteresis: a full period before the first probe
        return self._record(RouterEvent(self._wall_clock(), previous, state, reason, detail))

    def _record(self, event: RouterEvent) -> RouterEvent:
        self.events.append(event)
        return event
