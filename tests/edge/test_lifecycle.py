"""Server start-up errors, and graceful SIGTERM: in-flight requests finish, new ones are refused."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.runtime.polling import wait_until
from tests.edge.conftest import EDGE_NAME

FULL_BATCH = np.zeros((32, 3, 32, 32), dtype=np.float32)


def full_batch_request():
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=FULL_BATCH.shape)
    return service_pb2.ModelInferRequest(model_name=EDGE_NAME, inputs=[tensor],
                                         raw_input_contents=[FULL_BATCH.tobytes()])


def test_sigterm_finishes_in_flight_requests_then_exits(edge_repository, start_edge_server):
    server = start_edge_server(edge_repository)
    sigterm_at = []
    outcomes: list[tuple[float, grpc.StatusCode]] = []
    lock = threading.Lock()

    def client() -> None:
        with grpc.insecure_channel(server.url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not sigterm_at or time.monotonic() < sigterm_at[0] + 1.0:
                try:
                    stub.ModelInfer(full_batch_request(), timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                with lock:
                    outcomes.append((time.monotonic(), code))
                if code != grpc.StatusCode.OK:
                    return

    clients = [threading.Thread(target=client) for _ in range(6)]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(outcomes) >= 6, 30, "every client to have called once (the queue is busy)",
               interval_s=0.01)
    sigterm_at.append(time.monotonic())
    server.signal(signal.SIGTERM)
    for thread in clients:
        thread.join()
    assert server.proc.wait(15) == 0
    codes = {code for _, code in outcomes}
    # Refused: UNAVAILABLE from the draining server, or CANCELLED from gRPC for a call that
    # arrived just as the listener closed. Never an error from a request cut short.
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, codes
    finished_after_sigterm = [code for at, code in outcomes if at > sigterm_at[0] and code == grpc.StatusCode.OK]
    assert finished_after_sigterm, "no in-flight request was finished after SIGTERM"
    log = server.log_text()
    assert "event=stopping" in log and "event=stopped" in log


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_compress.cli", "edge-serve", *args],
                          capture_output=True, text=True, timeout=60)


def test_port_in_use_is_a_clear_error(edge_server, edge_repository):
    result = run_cli("--model-repository", str(edge_repository), "--host", "127.0.0.1",
                     "--port", str(edge_server.port))
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr


def test_empty_repository_is_a_clear_error(tmp_path):
    result = run_cli("--model-repository", str(tmp_path), "--port", "0")
    assert result.returncode == 2 and "holds no model directories" in result.stderr


def test_missing_tls_file_is_a_clear_error(edge_repository, tmp_path):
    result = run_cli("--model-repository", str(edge_repository), "--port", "0",
                     "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(tmp_path / "nope.key"))
    assert result.returncode == 2 and "nope" in result.stderr


def test_tls_key_without_cert_is_a_usage_error(edge_repository, tmp_path):
    result = run_cli("--model-repository", str(edge_repository), "--port", "0", "--tls-key", str(tmp_path / "k"))
    assert result.returncode == 2 and "--tls-cert and --tls-key" in result.stderr
