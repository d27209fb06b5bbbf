"""The robot's edge client against the project's edge server and against a real Triton: every
situation the router acts on must come out as the same failure kind from both."""

from __future__ import annotations

import collections
import json
import signal
import threading
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.runtime.backend import BackendError, FailureKind
from robot_compress.runtime.edge_client import EdgeBackend
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.model_contract import Manifest
from robot_compress.runtime.preprocess import preprocess_batch
from tests.conftest import EDGE_MODEL, rerun_after_a_stall
from tests.edge_models import link_model, outcomes_of_many_clients
from tests.triton.conftest import SERVERS, SMALL_QUEUE

ONE = np.zeros((1, 3, 32, 32), dtype=np.float32)


def failure(call) -> BackendError:
    with pytest.raises(BackendError) as caught:
        call()
    return caught.value


def still_serves(server, manifest) -> None:
    with EdgeBackend(server.url, manifest) as edge:
        assert edge.infer(ONE, timeout_s=10).shape == (1, 10)


def test_health_and_readiness(server, edge_manifest):
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name=edge_manifest.name), timeout=5).ready
    with EdgeBackend(server.url, edge_manifest) as edge:
        assert 0 < edge.probe(timeout_s=5) < 5


def test_model_metadata_matches_the_manifest(server, edge_manifest):
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=edge_manifest.name), timeout=5)
    assert metadata.name == edge_manifest.name and str(edge_manifest.version) in metadata.versions
    tensors = [(t.name, t.datatype, list(t.shape)) for t in (*metadata.inputs, *metadata.outputs)]
    assert tensors == [("input", "FP32", [-1, 3, 32, 32]), ("logits", "FP32", [-1, 10])]
    # Another model under the name the robot asks for: the probe must not call it healthy.
    with EdgeBackend(server.url, edge_manifest, model_name="tiny") as wrong:
        error = failure(lambda: wrong.probe(timeout_s=5))
    assert error.kind == FailureKind.BAD_ANSWER and "'scores'" in error.message


def test_inference_equals_the_local_backend(server, edge_manifest, cifar_test_dev):
    batch = preprocess_batch(cifar_test_dev.images[:48], "rgb8", edge_manifest.preprocessing)
    expected = LocalBackend(EDGE_MODEL).infer(batch)
    with EdgeBackend(server.url, edge_manifest) as edge:
        one_by_one = np.concatenate([edge.infer(batch[i:i + 1], timeout_s=10) for i in range(16)])
        batched = np.concatenate([edge.infer(batch[i:i + 16], timeout_s=10) for i in range(16, 48, 16)])
    answers = np.concatenate([one_by_one, batched])
    np.testing.assert_allclose(answers, expected, rtol=1e-4, atol=1e-4)
    assert (answers.argmax(1) == expected.argmax(1)).all()


def test_unknown_model(server, edge_manifest):
    with EdgeBackend(server.url, edge_manifest, model_name="no_such_model") as edge:
        assert failure(lambda: edge.infer(ONE, timeout_s=5)).kind == FailureKind.BAD_ANSWER  # NOT_FOUND
        assert failure(lambda: edge.probe(timeout_s=5)).kind == FailureKind.UNREACHABLE  # not ready


def test_wrong_shape(server, edge_manifest):
    """A robot whose manifest says 64x64 for a model served at 32x32; and a batch over max_batch_size."""
    fields = json.loads(json.dumps(edge_manifest.to_json()))
    wrong = Manifest.from_json({**fields, "input": {"name": "input", "dtype": "float32", "shape": [3, 64, 64]},
                                "preprocessing": {**fields["preprocessing"], "input_size": [64, 64]}})
    with EdgeBackend(server.url, wrong) as edge:
        error = failure(lambda: edge.infer(np.zeros((1, 3, 64, 64), np.float32), timeout_s=5))
        assert error.kind == FailureKind.BAD_ANSWER and "INVALID_ARGUMENT" in error.message
        assert failure(lambda: edge.probe(timeout_s=5)).kind == FailureKind.BAD_ANSWER
    with EdgeBackend(server.url, edge_manifest) as edge:
        error = failure(lambda: edge.infer(np.zeros((33, 3, 32, 32), np.float32), timeout_s=5))
        assert error.kind == FailureKind.BAD_ANSWER and "INVALID_ARGUMENT" in error.message
    still_serves(server, edge_manifest)


@rerun_after_a_stall
def test_deadline_expiry(server, edge_manifest):
    """A deadline shorter than the work, and a frozen server: TIMEOUT, and the server serves on."""
    full = np.zeros((32, 3, 32, 32), dtype=np.float32)
    with EdgeBackend(server.url, edge_manifest) as edge:
        edge.infer(ONE, timeout_s=10)  # connected, warm
        assert failure(lambda: edge.infer(full, timeout_s=0.002)).kind == FailureKind.TIMEOUT
        server.signal(signal.SIGSTOP)
        try:
            assert failure(lambda: edge.infer(ONE, timeout_s=0.3)).kind == FailureKind.TIMEOUT
        finally:
            server.signal(signal.SIGCONT)
        assert edge.infer(ONE, timeout_s=10).shape == (1, 10)


def test_overload_is_overloaded(server, edge_manifest):
    """24 robots at once on a model whose queue holds 2: answers, or OVERLOADED, nothing else
    (the edge server says RESOURCE_EXHAUSTED, Triton UNAVAILABLE "Exceeds maximum queue size")."""
    backend = EdgeBackend(server.url, edge_manifest, model_name=SMALL_QUEUE)
    backend.infer(ONE, timeout_s=10)
    kinds = outcomes_of_many_clients(backend, ONE)
    backend.close()
    assert set(kinds) <= {"ok", FailureKind.OVERLOADED}, kinds
    assert kinds[FailureKind.OVERLOADED] > 0 and kinds["ok"] > 0, kinds
    still_serves(server, edge_manifest)


@pytest.mark.parametrize("kind", SERVERS)
def test_server_killed_mid_stream(kind, start_server, edge_manifest, tmp_path):
    """SIGKILL while a robot streams requests: every later call is UNREACHABLE, probe too."""
    repository = tmp_path / "repository"
    repository.mkdir()
    link_model(EDGE_MODEL, repository, max_batch_size=32, max_queue_delay_us=500, max_queue_size=64)
    server = start_server(kind, repository)
    outcomes: list[tuple[float, object]] = []
    stop = threading.Event()
    edge = EdgeBackend(server.url, edge_manifest)

    def stream() -> None:
        while not stop.is_set():
            try:
                edge.infer(ONE, timeout_s=1.0)
                outcomes.append((time.monotonic(), "ok"))
            except BackendError as exc:
                outcomes.append((time.monotonic(), exc.kind))
                time.sleep(0.02)

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        while sum(1 for _, k in outcomes if k == "ok") < 10:
            assert thread.is_alive() and not [k for _, k in outcomes if k != "ok"], outcomes
            time.sleep(0.01)
        killed_at = time.monotonic()
        server.kill()
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join()
    after = collections.Counter(k for at, k in outcomes if at > killed_at + 0.05)  # the call in flight may end either way
    assert after and set(after) == {FailureKind.UNREACHABLE}, after
    assert failure(lambda: edge.probe(timeout_s=1)).kind == FailureKind.UNREACHABLE
    edge.close()
