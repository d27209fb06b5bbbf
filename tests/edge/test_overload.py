"""64 clients against a small queue: every request succeeds or gets RESOURCE_EXHAUSTED, the
server survives, and its memory stays within 1.5x of idle."""

from __future__ import annotations

import collections
import threading
import time

import grpc
import numpy as np
import psutil
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.edge.process import EdgeServerProcess
from robot_compress.runtime.backend import FailureKind
from robot_compress.runtime.edge_client import EdgeBackend
from tests.conftest import EDGE_MODEL
from tests.edge.conftest import EDGE_NAME
from tests.edge_models import link_model, outcomes_of_many_clients

CLIENTS = 64
REQUESTS_PER_CLIENT = 15
BATCH = np.zeros((1, 3, 32, 32), dtype=np.float32)


def infer_request() -> service_pb2.ModelInferRequest:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=BATCH.shape)
    return service_pb2.ModelInferRequest(model_name=EDGE_NAME, inputs=[tensor], raw_input_contents=[BATCH.tobytes()])


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("small_queue")
    link_model(EDGE_MODEL, repository, max_batch_size=4, max_queue_delay_us=500, max_queue_size=4)
    server = EdgeServerProcess(repository, repository / "server.log", "--max-concurrent-rpcs", "32")
    yield server.start()
    server.stop()


class RssMonitor:
    """Samples a process's resident memory every 20 ms in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def hammer(url: str, codes: collections.Counter, lock: threading.Lock) -> None:
    """One client with its own connection, sending requests back to back."""
    request = infer_request()
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(REQUESTS_PER_CLIENT):
            try:
                stub.ModelInfer(request, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            with lock:
                codes[code] += 1


def test_64_clients_get_answers_or_resource_exhausted_and_memory_stays_bounded(small_queue_server):
    url = small_queue_server.url
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
    for _ in range(20):  # warm up ONNX Runtime at every batch size the batcher can form
        stub.ModelInfer(infer_request(), timeout=10)
    time.sleep(0.3)
    idle_rss = psutil.Process(small_queue_server.proc.pid).memory_info().rss

    codes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    clients = [threading.Thread(target=hammer, args=(url, codes, lock)) for _ in range(CLIENTS)]
    with RssMonitor(small_queue_server.proc.pid) as rss:
        for client in clients:
            client.start()
        for client in clients:
            client.join()

    assert sum(codes.values()) == CLIENTS * REQUESTS_PER_CLIENT
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes[grpc.StatusCode.OK] > 0 and codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0, codes
    assert small_queue_server.proc.poll() is None, "the server died under load"
    assert rss.peak <= 1.5 * idle_rss, f"server RSS grew from {idle_rss >> 20} MiB idle to {rss.peak >> 20} MiB"
    assert stub.ModelInfer(infer_request(), timeout=10).model_name == EDGE_NAME
    assert "event=overloaded" in small_queue_server.log_text()
    statistics = stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name=EDGE_NAME), timeout=10)
    assert statistics.model_stats[0].inference_stats.fail.count >= codes[grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_edge_backend_reports_overload_as_overloaded(small_queue_server, edge_manifest):
    backend = EdgeBackend(small_queue_server.url, edge_manifest)
    kinds = outcomes_of_many_clients(backend, BATCH)
    backend.close()
    assert set(kinds) <= {"ok", FailureKind.OVERLOADED}, kinds
    assert kinds[FailureKind.OVERLOADED] > 0 and kinds["ok"] > 0, kinds
