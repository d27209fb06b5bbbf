"""Edge/local failover for one stream of frames: the per-frame deadline and hedging race, and the
prober thread, both driving the circuit breaker (circuit_breaker.py: EDGE/LOCAL/PROBING).

A frame in EDGE goes to the edge; one whose edge answer fails or misses `deadline_ms` is answered by
the local model at once, and with `hedge_after_ms` the local model starts early and the first answer
wins. Every `classify` call returns exactly one `RouteResult`. An edge answer that arrives after its
frame was answered locally is dropped and counted. Every edge call counts once for the circuit
breaker (success, failure, or an answer after the deadline), also when a hedge answered its frame
first. No ROS here: the node is a thin shell over this.

The race and the prober stay in one module (about 400 lines): both hand their outcomes to the one
breaker under one lock and emit its events through the same guarded callback.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_compress.runtime.backend import Backend, BackendError, FailureKind, ProbeableBackend
from robot_compress.runtime.circuit_breaker import CircuitBreaker, RouterEvent, RouterState
from robot_compress.runtime.latency_stats import LatencyWindow
from robot_compress.runtime.perception_config import RouterConfig

__all__ = ["RECENT_RESULTS", "RouteResult", "Router", "RouterEvent", "RouterState", "RouterStats"]

EDGE, LOCAL, NONE = "edge", "local", "none"  # RouteResult.backend values
CALLBACK_ERROR_LOG_PERIOD_S = 5.0
RECENT_RESULTS = 100  # RouterStats.recent_answers: the backends of this many latest results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteResult:
    """The one answer for one frame."""

    seq: int
    stamp: Any  # the caller's frame stamp, passed through untouched
    backend: str  # "edge", "local", or "none" when no backend could answer (then `error` says why)
    state: RouterState  # router state when the frame was answered
    logits: np.ndarray | None  # the answering backend's output as it gave it (logits, or detection rows)
    latency_ms: float  # from classify() being called to the answer
    inference_ms: float  # the answering backend's own call; latency_ms - inference_ms = routing cost
    edge_failure: str | None = None  # why the edge did not answer this frame, when it was asked
    hedged: bool = False  # the local model was started early for this frame
    error: str | None = None
    answered_at: float | None = None  # wall clock (time.time()) of the answer: comparable with camera stamps


@dataclass(frozen=True)
class RouterStats:
    state: RouterState
    forced_local: bool
    frames: int
    answers: dict[str, int]  # since start
    recent_answers: dict[str, int]  # among the last RECENT_RESULTS results
    failovers: int
    late_edge_dropped: int
    hedged: int
    edge_failures: dict[str, int]
    edge_rtt_p50_ms: float | None
    edge_rtt_p99_ms: float | None
    local_p50_ms: float | None
    local_p99_ms: float | None
    last_probe_ms: float | None
    last_event: RouterEvent | None
    event_callback_errors: int  # exceptions raised by on_event, caught and counted
    prober_alive: bool  # False once the prober thread has ended (True without an edge)
    events: list[RouterEvent] = field(default_factory=list)


class _EdgeCall:
    """One edge request. Who answered its frame: whichever of (edge finished, local claimed the frame)
    happens second decides whether a late edge answer was dropped, so the count is exact under any
    interleaving. `counted` makes sure the circuit breaker sees its outcome exactly once."""

    def __init__(self, deadline: float) -> None:
        self.lock = threading.Lock()
        self.deadline = deadline
        self.owner: str | None = None
        self.edge_ok: bool | None = None  # None while the edge call is running
        self.finished_at: float | None = None
        self.counted = False


class Router:
    """Routes frames to the edge or the local backend. `classify` is blocking and meant for one
    worker thread; state changes come from it and from a background prober thread."""

    def __init__(self, local: Backend, edge: ProbeableBackend | None = None, config: RouterConfig | None = None,
                 on_event: Callable[[RouterEvent], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.local, self.edge = local, edge
        self.config = config or RouterConfig().for_task("classification")
        if not self.config.resolved:  # 0 means "the task's default", which only the caller knows
            raise ValueError("Router needs a deadline: deadline_ms 0 stands for the local model's task "
                             "default; pass RouterConfig.for_task(task)")
        self._on_event = on_event
        self._clock = clock
        self._lock = threading.Lock()  # guards the breaker and the counters below
        self._wake = threading.Condition(self._lock)  # notified on state changes and close()
        self._closed = False
        self._breaker = CircuitBreaker(self.config, has_edge=edge is not None, clock=clock)
        self._inflight = 0
        self._seq = itertools.count()
        self._frames = 0
        self._answers: Counter[str] = Counter()
        self._recent: deque[str] = deque(maxlen=RECENT_RESULTS)
        self._edge_failures: Counter[str] = Counter()
        self._late_dropped = 0
        self._hedged = 0
        self._edge_rtt = LatencyWindow()
        self._local_ms = LatencyWindow()
        self._callback_errors = 0
        self._callback_error_logged_at: float | None = None
        self._local_pool = ThreadPoolExecutor(1, thread_name_prefix="router-local")
        self._edge_pool: ThreadPoolExecutor | None = None
        self._prober: threading.Thread | None = None
        self._emit(self._breaker.events[-1])
        if edge is not None:
            self._edge_pool = ThreadPoolExecutor(self.config.edge_max_inflight, thread_name_prefix="router-edge")
            self._prober = threading.Thread(target=self._probe_loop, name="router-prober", daemon=True)
            self._prober.start()

    # --- frames -------------------------------------------------------------------------------

    def classify(self, batch: np.ndarray, stamp: Any = None) -> RouteResult:
        """Exactly one result for this frame, by the deadline plus local inference time at worst."""
        start = self._clock()
        seq = next(self._seq)
        with self._lock:
            state = self._breaker.state
        if state is RouterState.EDGE:
            result = self._via_edge(batch, seq, stamp, start)
        else:
            result = self._answer_locally(batch, seq, stamp, start, None)
        with self._lock:
            self._frames += 1
            self._answers[result.backend] += 1
            self._recent.append(result.backend)
        return result

    def _via_edge(self, batch: np.ndarray, seq: int, stamp: Any, start: float) -> RouteResult:
        cfg = self.config
        deadline = start + cfg.deadline_ms / 1000.0
        with self._lock:
            room = self._inflight < cfg.edge_max_inflight
            if room:
                self._inflight += 1
        if not room:
            event = self._edge_failed(FailureKind.OVERLOADED, f"{cfg.edge_max_inflight} edge requests already in flight")
            return self._emit_after(self._answer_locally(batch, seq, stamp, start, FailureKind.OVERLOADED.value), event)
        call = _EdgeCall(deadline)
        edge_future = self._edge_pool.submit(self._edge_call, batch, cfg.deadline_ms / 1000.0, call)
        edge_future.add_done_callback(lambda f: self._edge_finished(f, call))
        hedge_at = start + cfg.hedge_after_ms / 1000.0 if cfg.hedge_after_ms else None
        local_future: Future | None = None
        failure: BackendError | None = None
        event: RouterEvent | None = None
        while True:
            if edge_future.done():
                failure = self._outcome(edge_future, call)
                if failure is None:
                    logits, rtt_ms = edge_future.result()
                    with call.lock:
                        call.owner = EDGE
                    self._settle(call, None, rtt_ms)
                    return self._result(seq, stamp, EDGE, logits, start, rtt_ms, hedged=local_future is not None)
                event = self._settle(call, failure)
                break
            hedge_done = local_future is not None and local_future.done()
            if hedge_done and local_future.exception() is None:
                break  # the hedge won; the edge call is counted when it finishes or its deadline passes
            now = self._clock()
            if now >= deadline:
                failure = BackendError(FailureKind.TIMEOUT, f"no edge answer within {cfg.deadline_ms:g} ms")
                event = self._settle(call, failure)
                break
            if hedge_at is not None and local_future is None and now >= hedge_at:
                local_future = self._local_pool.submit(self._local_call, batch)
                with self._lock:
                    self._hedged += 1
            wake = deadline if hedge_at is None or local_future is not None else hedge_at
            waiting = [edge_future] if local_future is None or hedge_done else [edge_future, local_future]
            wait(waiting, timeout=max(0.0, wake - now), return_when=FIRST_COMPLETED)
        with call.lock:
            call.owner = LOCAL
            late = call.edge_ok is True
            finished = call.edge_ok is not None
        if late:
            self._count_late()
        if finished:  # the hedge won after the edge call ended: its callback left the count to this thread
            event = event or self._settle_finished(edge_future, call)
        kind = failure.kind.value if failure is not None else None
        return self._emit_after(self._answer_locally(batch, seq, stamp, start, kind, local_future), event)

    def _emit_after(self, result: RouteResult, event: RouterEvent | None) -> RouteResult:
        """Emit this frame's failover event once the frame is answered: the subscriber's callback (in
        the node a log line and two messages, ~1 ms) is then not on the first black-hole frame's path."""
        self._emit(event)
        return result

    def _edge_call(self, batch: np.ndarray, timeout_s: float, call: _EdgeCall) -> tuple[np.ndarray, float]:
        t0 = self._clock()
        try:
            logits = self.edge.infer(batch, timeout_s=timeout_s)
        except BackendError:
            raise
        except Exception as exc:  # a client bug must not take the frame down with it
            raise BackendError(FailureKind.BAD_ANSWER, f"edge client raised {type(exc).__name__}: {exc}") from exc
        finally:
            call.finished_at = self._clock()
        logits = np.asarray(logits)
        if logits.ndim < 2 or logits.shape[0] != batch.shape[0] or not np.isfinite(logits).all():
            raise BackendError(FailureKind.BAD_ANSWER, f"edge logits of shape {logits.shape} (finite: "
                               f"{bool(np.isfinite(logits).all())}) for a batch of {batch.shape[0]}")
        return logits, (call.finished_at - t0) * 1000.0

    def _outcome(self, future: Future, call: _EdgeCall) -> BackendError | None:
        """A finished edge call's failure (an answer after the deadline is a timeout), or None."""
        error = future.exception()
        if error is None and call.finished_at > call.deadline:
            late_ms = (call.finished_at - call.deadline) * 1000.0
            return BackendError(FailureKind.TIMEOUT, f"edge answered {late_ms:.1f} ms after the "
                                f"{self.config.deadline_ms:g} ms deadline")
        return error

    def _edge_finished(self, future: Future, call: _EdgeCall) -> None:
        """Done callback of every edge call: frees its slot, counts a dropped late answer, and counts
        its outcome once the frame's thread has let go of the call. While that thread still waits on
        it (or when the call ended before the callback was added, which runs it in that thread), the
        frame's thread counts it, and emits any failover after answering the frame."""
        with self._lock:
            self._inflight -= 1
        if future.cancelled():  # close() cancelled it before it ran
            return
        answered = future.exception() is None
        with call.lock:
            call.edge_ok = answered
            late = answered and call.owner == LOCAL
            frame_counts = call.owner is None
        if late:
            self._count_late()
        if not frame_counts:
            self._emit(self._settle_finished(future, call))

    def _settle_finished(self, future: Future, call: _EdgeCall) -> RouterEvent | None:
        failure = self._outcome(future, call)
        return self._settle(call, failure, future.result()[1] if failure is None else None)

    def _settle(self, call: _EdgeCall, failure: BackendError | None,
                rtt_ms: float | None = None) -> RouterEvent | None:
        """The one place where an edge call's outcome reaches the circuit breaker, once per call: when
        the call finishes or its deadline passes, whether or not a hedge already answered the frame.
        Returns the failover event, if any, for the caller to emit."""
        with call.lock:
            if call.counted:
                return None
            call.counted = True
        if failure is None:
            self._edge_succeeded(rtt_ms)
            return None
        return self._edge_failed(failure.kind, failure.message)

    def _count_late(self) -> None:
        with self._lock:
            self._late_dropped += 1

    def _local_call(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = self._clock()
        logits = self.local.infer(batch)
        return logits, (self._clock() - t0) * 1000.0

    def _answer_locally(self, batch: np.ndarray, seq: int, stamp: Any, start: float, edge_failure: str | None,
                        local_future: Future | None = None) -> RouteResult:
        hedged = local_future is not None
        try:
            logits, ms = local_future.result() if hedged else self._local_call(batch)
        except Exception as exc:  # the frame still gets its one result, with the reason
            return self._result(seq, stamp, NONE, None, start, 0.0, edge_failure, hedged,
                                error=f"local backend failed: {type(exc).__name__}: {exc}")
        with self._lock:
            self._local_ms.add(ms)
        return self._result(seq, stamp, LOCAL, logits, start, ms, edge_failure, hedged)

    def _result(self, seq: int, stamp: Any, backend: str, logits: np.ndarray | None, start: float,
                inference_ms: float, edge_failure: str | None = None, hedged: bool = False,
                error: str | None = None) -> RouteResult:
        with self._lock:
            state = self._breaker.state
        return RouteResult(seq, stamp, backend, state, logits, (self._clock() - start) * 1000.0, inference_ms,
                           edge_failure, hedged, error, answered_at=time.time())

    # --- health -------------------------------------------------------------------------------

    def _edge_succeeded(self, rtt_ms: float) -> None:
        with self._lock:
            self._breaker.edge_succeeded()
            self._edge_rtt.add(rtt_ms)

    def _edge_failed(self, kind: FailureKind, message: str) -> RouterEvent | None:
        """Count a failure; the failover it causes (state changed already) is returned for the caller to emit."""
        with self._lock:
            self._edge_failures[kind.value] += 1
            return self._changed(self._breaker.edge_failed(kind.value, message))

    def _changed(self, event: RouterEvent | None) -> RouterEvent | None:
        """Wake the prober after a breaker call that may have changed its schedule (caller holds the lock)."""
        self._wake.notify_all()
        return event

    def _probe_loop(self) -> None:
        """Probe whenever the breaker says one is due; sleep until then, or until woken by a state
        change or close()."""
        while True:
            with self._wake:
                if self._closed:
                    return
                due = self._breaker.next_probe_at
                if due is None:
                    self._wake.wait()
                    continue
                delay = due - self._clock()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                token = self._breaker.start_probe()
            self._probe_once(token)

    def _probe_once(self, token: int) -> None:
        t0 = self._clock()
        try:
            self.edge.probe(timeout_s=self.config.probe_timeout_ms / 1000.0)
            ms, reason, detail = (self._clock() - t0) * 1000.0, None, ""
        except BackendError as exc:
            ms, reason, detail = None, exc.kind.value, exc.message
        except Exception as exc:  # an unhealthy probe, whatever the client raised
            ms, reason, detail = None, FailureKind.UNREACHABLE.value, f"{type(exc).__name__}: {exc}"
        with self._lock:
            if self._closed:
                return
            events = self._breaker.probe_finished(token, ms, reason, detail)
            self._changed(None)
        for event in events:
            self._emit(event)

    def _emit(self, event: RouterEvent | None) -> None:
        """Call on_event; an exception from it is counted and logged (throttled), never raised into
        the frame's thread or the prober."""
        if event is None or self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            now = self._clock()
            with self._lock:
                self._callback_errors += 1
                errors, last = self._callback_errors, self._callback_error_logged_at
                quiet = last is not None and now - last < CALLBACK_ERROR_LOG_PERIOD_S
                if not quiet:
                    self._callback_error_logged_at = now
            if not quiet:
                log.exception("router on_event callback raised (%d so far); the router goes on", errors)

    # --- operator and introspection -------------------------------------------------------------

    def force_local(self, enabled: bool) -> None:
        """Operator override: stay LOCAL and stop probing until released; then probing resumes and
        the edge must earn `recovery_probes` healthy probes again, none of them a probe that was in
        flight at the request. Every request is an event, also when the state does not change."""
        with self._lock:
            event = self._changed(self._breaker.force_local(enabled))
        self._emit(event)

    @property
    def state(self) -> RouterState:
        with self._lock:
            return self._breaker.state

    def stats(self) -> RouterStats:
        with self._lock:
            breaker = self._breaker
            return RouterStats(
                state=breaker.state, forced_local=breaker.forced, frames=self._frames, answers=dict(self._answers),
                recent_answers=dict(Counter(self._recent)),
                failovers=breaker.failovers, late_edge_dropped=self._late_dropped, hedged=self._hedged,
                edge_failures=dict(self._edge_failures),
                edge_rtt_p50_ms=self._edge_rtt.percentile(50), edge_rtt_p99_ms=self._edge_rtt.percentile(99),
                local_p50_ms=self._local_ms.percentile(50), local_p99_ms=self._local_ms.percentile(99),
                last_probe_ms=breaker.last_probe_ms, last_event=breaker.events[-1],
                event_callback_errors=self._callback_errors,
                prober_alive=self._prober is None or self._prober.is_alive(), events=list(breaker.events))

    def close(self) -> None:
        """Stop the prober and the worker pools (the backends stay open: their owner closes them)."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._prober is not None:
            self._prober.join(timeout=5.0)
        if self._edge_pool is not None:
            self._edge_pool.shutdown(wait=False, cancel_futures=True)
        self._local_pool.shutdown(wait=False, cancel_futures=True)
