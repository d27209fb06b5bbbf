"""The dynamic batcher on its own, in-process: batching, slicing, bounds, shutdown, failures."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

from robot_compress.edge.batcher import BatcherStopped, BatchingConfig, DynamicBatcher, QueueFull


class Model:
    """Doubles its input; records every batch size it ran; can be held to let a queue fill."""

    def __init__(self):
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.gate.wait(10)
        self.batch_sizes.append(len(batch))
        return batch * 2


@pytest.fixture
def model():
    return Model()


def submit_concurrently(batcher: DynamicBatcher, arrays: list[np.ndarray]) -> list[np.ndarray]:
    results: list[np.ndarray | None] = [None] * len(arrays)
    barrier = threading.Barrier(len(arrays))

    def client(i: int) -> None:
        barrier.wait()
        results[i] = batcher.submit(arrays[i]).result(10)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(arrays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(model):
    config = BatchingConfig(max_batch_size=8, max_queue_size=16, max_queue_delay_s=0.5, adaptive_delay=False)
    batcher = DynamicBatcher("m", model, config)
    arrays = [np.full((1 + i % 2, 3), i, dtype=np.float32) for i in range(8)]  # 12 rows in all
    results = submit_concurrently(batcher, arrays)
    batcher.stop()
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result, array * 2)
    assert len(model.batch_sizes) < len(arrays), model.batch_sizes
    assert max(model.batch_sizes) <= 8 and sum(model.batch_sizes) == 12
    assert (batcher.executions, batcher.executed_rows) == (len(model.batch_sizes), 12)


def test_without_dynamic_batching_every_request_runs_alone(model):
    batcher = DynamicBatcher("m", model, BatchingConfig(max_batch_size=8, max_queue_size=16, dynamic=False))
    submit_concurrently(batcher, [np.ones((2, 3), np.float32)] * 6)
    batcher.stop()
    assert model.batch_sizes == [2] * 6


def test_a_lone_request_does_not_wait_for_company_with_adaptive_delay(model):
    """With a 60 s queue delay, only the adaptive wait lets a single client's request run at once."""
    batcher = DynamicBatcher("m", model, BatchingConfig(max_batch_size=8, max_queue_size=4, max_queue_delay_s=60))
    for _ in range(3):
        assert batcher.submit(np.ones((1, 3), np.float32)).result(5).shape == (1, 3)
    batcher.stop()


def test_full_queue_rejects_at_once_and_holds_no_more(model):
    model.gate.clear()  # the executor is busy: requests stay queued
    batcher = DynamicBatcher("m", model, BatchingConfig(max_batch_size=1, max_queue_size=3))
    running = batcher.submit(np.ones((1, 3), np.float32))
    while batcher._queue:  # wait until the executor holds the first one
        threading.Event().wait(0.01)
    queued = [batcher.submit(np.ones((1, 3), np.float32)) for _ in range(3)]
    for _ in range(5):
        with pytest.raises(QueueFull, match="queue is full"):
            batcher.submit(np.ones((1, 3), np.float32))
    assert len(batcher._queue) == 3 and batcher.rejected == 5
    model.gate.set()
    assert all(f.result(5).shape == (1, 3) for f in [running, *queued])
    batcher.stop()


def test_stop_finishes_queued_requests_and_refuses_new_ones(model):
    model.gate.clear()
    batcher = DynamicBatcher("m", model, BatchingConfig(max_batch_size=2, max_queue_size=8))
    futures = [batcher.submit(np.ones((1, 3), np.float32)) for _ in range(5)]
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    model.gate.set()
    stopper.join(10)
    assert all(f.result(0).shape == (1, 3) for f in futures)
    with pytest.raises(BatcherStopped):
        batcher.submit(np.ones((1, 3), np.float32))


def test_model_failure_reaches_every_request_of_the_batch():
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("onnxruntime exploded")

    batcher = DynamicBatcher("m", broken, BatchingConfig(max_batch_size=4, max_queue_size=8, max_queue_delay_s=0.2,
                                                         adaptive_delay=False))
    futures = [batcher.submit(np.ones((1, 3), np.float32)) for _ in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="exploded"):
            future.result(5)
    batcher.stop()
    assert batcher.executions == 0


def test_request_cancelled_while_queued_is_skipped(model):
    model.gate.clear()
    batcher = DynamicBatcher("m", model, BatchingConfig(max_batch_size=1, max_queue_size=8))
    first = batcher.submit(np.ones((1, 3), np.float32))
    abandoned = batcher.submit(np.ones((1, 3), np.float32))
    assert abandoned.cancel()
    model.gate.set()
    first.result(5)
    batcher.stop()
    with pytest.raises(CancelledError):
        abandoned.result(0)
    assert model.batch_sizes == [1]


def test_batching_config_is_validated():
    with pytest.raises(ValueError, match="max_queue_size"):
        BatchingConfig(max_batch_size=4, max_queue_size=0)


class ExecutorKilled(BaseException):
    """Escapes the batcher's `except Exception`, as a fatal error in an executor thread would."""


@pytest.mark.parametrize("delay_s, instances", [(-1.0, 1), (61.0, 1), (2.0 ** 64 / 1e6, 1), (0.0, 0), (0.0, 65)])
def test_out_of_range_config_is_refused(delay_s, instances):
    with pytest.raises(ValueError, match="must be in"):
        BatchingConfig(max_batch_size=4, max_queue_size=4, max_queue_delay_s=delay_s, instances=instances)


def test_dead_executor_makes_the_model_not_ready_and_fails_requests_fast(model):
    gate = threading.Event()

    def dies(batch: np.ndarray) -> np.ndarray:
        gate.wait(10)
        raise ExecutorKilled()

    batcher = DynamicBatcher("m", dies, BatchingConfig(max_batch_size=1, max_queue_size=8, dynamic=False))
    assert batcher.healthy
    running = batcher.submit(np.ones((1, 2), np.float32))
    queued = batcher.submit(np.ones((1, 2), np.float32))
    gate.set()
    with pytest.raises(BatcherStopped, match="executor failed"):
        running.result(5)
    with pytest.raises(BatcherStopped, match="executor failed"):
        queued.result(5)
    assert not batcher.healthy
    with pytest.raises(BatcherStopped, match="not ready"):
        batcher.submit(np.ones((1, 2), np.float32))
