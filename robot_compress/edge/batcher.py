"""Triton-style dynamic batching in front of one model, with a bounded queue.

Requests wait in a queue of at most `max_queue_size` entries; a full queue rejects at once
(`QueueFull`) instead of growing, so the server's memory does not grow with load. An executor
thread (one per model instance) takes the oldest request and waits up to `max_queue_delay_s`
from that request's arrival for more, until `max_batch_size` rows are queued, then runs them as
one batch and hands every request its own slice of the output.

One refinement over Triton (`adaptive_delay`, on by default): the executor waits only for as many
requests as were recently in flight at once. A lone client (the robot) then pays no queue delay,
while 16 concurrent clients still batch up; `adaptive_delay=False` waits exactly as Triton does.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("robot_compress.edge")

PEAK_WINDOW_S = 1.0
# Accepted ranges (config.pbtxt values beyond them are refused at load, naming the field).
MAX_BATCH_SIZE = 4096
MAX_QUEUE_SIZE = 1_000_000
MAX_QUEUE_DELAY_S = 60.0
MAX_INSTANCES = 64


@dataclass(frozen=True)
class BatchingConfig:
    """From config.pbtxt: max_batch_size, dynamic_batching {...}, instance_group count."""

    max_batch_size: int  # rows per execution
    max_queue_size: int  # requests waiting; beyond it requests are rejected
    max_queue_delay_s: float = 0.0  # how long the oldest request may wait for others
    dynamic: bool = True  # False: every request runs alone, as Triton does without dynamic_batching
    instances: int = 1  # executor threads sharing the model (ONNX Runtime sessions are thread-safe)
    adaptive_delay: bool = True  # wait only for requests that recent concurrency says are coming

    def __post_init__(self):
        for name, high in (("max_batch_size", MAX_BATCH_SIZE), ("max_queue_size", MAX_QUEUE_SIZE),
                           ("instances", MAX_INSTANCES)):
            if not 1 <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be in 1..{high}, got {getattr(self, name)}")
        if not 0 <= self.max_queue_delay_s <= MAX_QUEUE_DELAY_S:
            raise ValueError(f"max_queue_delay_s must be in 0..{MAX_QUEUE_DELAY_S:g}, got {self.max_queue_delay_s}")


class QueueFull(Exception):
    """The model's queue is full; the caller should answer RESOURCE_EXHAUSTED."""


class BatcherStopped(Exception):
    """The batcher is shutting down, or an executor thread died, and takes no new requests."""


@dataclass
class _Pending:
    array: np.ndarray
    rows: int
    enqueued: float
    future: Future


class DynamicBatcher:
    """Queue + executor threads for one model; `run` maps an (N, ...) batch to (N, ...) outputs."""

    def __init__(self, name: str, run: Callable[[np.ndarray], np.ndarray], config: BatchingConfig):
        self.name = name
        self.config = config
        self._run = run
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._stopping = False
        self.executions = 0  # successful model runs, their rows and time (for ModelStatistics)
        self.executed_rows = 0
        self.compute_ns = 0
        self.rejected = 0
        self.failure: BaseException | None = None  # what killed an executor thread; the model is then not ready
        self._in_flight = 0  # submitted and not yet answered (queued + executing)
        self._recent_peak = 0  # most requests in flight at once during the last PEAK_WINDOW_S
        self._peak_at = 0.0
        self._threads = [threading.Thread(target=self._loop, name=f"batcher-{name}-{i}", daemon=True)
                         for i in range(config.instances)]
        for thread in self._threads:
            thread.start()

    def submit(self, array: np.ndarray) -> Future:
        """Queue one request (its rows along axis 0); the future resolves to its output rows."""
        if len(array) > self.config.max_batch_size:
            raise ValueError(f"batch of {len(array)} exceeds max_batch_size {self.config.max_batch_size}")
        pending = _Pending(array, len(array), time.monotonic(), Future())
        with self._cond:
            if self.failure is not None:
                raise BatcherStopped(f"model {self.name} is not ready: its executor failed ({self.failure!r})")
            if self._stopping:
                raise BatcherStopped(f"model {self.name} is shutting down")
            if len(self._queue) >= self.config.max_queue_size:
                self.rejected += 1
                raise QueueFull(f"model {self.name}: queue is full ({self.config.max_queue_size} requests "
                                f"waiting); retry later")
            self._queue.append(pending)
            self._queued_rows += pending.rows
            self._in_flight += 1
            if self._in_flight >= self._recent_peak or pending.enqueued - self._peak_at > PEAK_WINDOW_S:
                self._recent_peak, self._peak_at = self._in_flight, pending.enqueued
            self._cond.notify_all()
        return pending.future

    def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, and end the executor threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)

    @property
    def healthy(self) -> bool:
        """False once any executor thread has died: requests would wait for nobody."""
        return self.failure is None and all(t.is_alive() for t in self._threads if t.ident is not None)

    def _loop(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._execute(batch)
        except BaseException as exc:  # a bug or a fatal error: fail fast instead of hanging callers
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        log.error("event=executor_died model=%s error=%r", self.name, exc)
        with self._cond:
            self.failure = exc
            self._stopping = True
            while self._queue:
                pending = self._queue.popleft()
                if pending.future.set_running_or_notify_cancel():
                    pending.future.set_exception(BatcherStopped(f"model {self.name}: executor failed ({exc!r})"))
            self._queued_rows = 0
            self._in_flight = 0
            self._cond.notify_all()

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for work; None once stopping with nothing left. May return [] (raced, cancelled)."""
        config = self.config
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if config.dynamic and config.max_queue_delay_s > 0:
                deadline = self._queue[0].enqueued + config.max_queue_delay_s
                while self._queue and self._worth_waiting() and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch: list[_Pending] = []
            rows = 0
            while self._queue and (not batch or config.dynamic and rows + self._queue[0].rows <= config.max_batch_size):
                pending = self._queue.popleft()
                self._queued_rows -= pending.rows
                if pending.future.set_running_or_notify_cancel():  # False: caller gave up while queued
                    batch.append(pending)
                    rows += pending.rows
                else:
                    self._in_flight -= 1
            return batch

    def _worth_waiting(self) -> bool:
        if self._queued_rows >= self.config.max_batch_size:
            return False
        return not self.config.adaptive_delay or len(self._queue) < self._recent_peak

    def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter_ns()
        try:
            rows = self._run_batch(batch)
        except BaseException as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(BatcherStopped(f"model {self.name}: executor failed ({exc!r})"))
            raise
        with self._cond:
            self._in_flight -= len(batch)
            if rows:
                self.executions += 1
                self.executed_rows += rows
                self.compute_ns += time.perf_counter_ns() - started

    def _run_batch(self, batch: list[_Pending]) -> int:
        """Run one batch and resolve its futures; returns the rows run (0 if the model failed)."""
        inputs = batch[0].array if len(batch) == 1 else np.concatenate([p.array for p in batch])
        try:
            outputs = self._run(inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"model {self.name} returned {len(outputs)} rows for {len(inputs)} inputs")
        except Exception as exc:  # the model failed: every request in the batch gets the error
            log.error("event=execution_failed model=%s rows=%d error=%r", self.name, len(inputs), str(exc))
            for pending in batch:
                pending.future.set_exception(exc)
            return 0
        offset = 0
        for pending in batch:
            pending.future.set_result(outputs[offset:offset + pending.rows])
            offset += pending.rows
        return len(inputs)
