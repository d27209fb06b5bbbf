"""EdgeBackend against real conditions: answers, concurrency, and each failure kind."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from robot_compress.faults.process_group import freeze_group, thaw_group
from robot_compress.runtime.backend import BackendError, FailureKind
from robot_compress.runtime.edge_client import ChannelSettings, EdgeBackend, failure_from_rpc
from robot_compress.runtime.errors import ImageError
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.polling import wait_until
from robot_compress.runtime.preprocess import preprocess_batch
from tests.conftest import EDGE_MODEL, free_port

DEADLINE_S = 0.5
SLACK_S = 1.0  # scheduling on a loaded 2-core machine; the point is "bounded", not "fast"


def failure(call) -> BackendError:
    with pytest.raises(BackendError) as error:
        call()
    return error.value


@pytest.fixture(scope="module")
def frames(cifar_test_dev, edge_manifest):
    return preprocess_batch(cifar_test_dev.images[:64], "rgb8", edge_manifest.preprocessing)


def test_answers_match_the_local_backend_from_concurrent_threads(edge_server, edge_manifest, frames):
    local = LocalBackend(EDGE_MODEL).infer(frames)
    results: dict[int, np.ndarray] = {}
    errors: list[Exception] = []
    with EdgeBackend(edge_server.url, edge_manifest) as backend:
        assert backend.name == "edge" and backend.probe() > 0

        def worker(start: int) -> None:
            try:
                for i in range(start, len(frames), 8):
                    results[i] = backend.infer(frames[i:i + 1], timeout_s=10)[0]
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(start,)) for start in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        np.testing.assert_allclose(np.stack([results[i] for i in range(len(frames))]), local, rtol=1e-4, atol=1e-4)
        assert backend.infer(frames[:5], timeout_s=10).shape == (5, 10)


def test_wrong_input_is_the_callers_bug(edge_server, edge_manifest):
    with EdgeBackend(edge_server.url, edge_manifest) as backend, pytest.raises(ImageError):
        backend.infer(np.zeros((1, 32, 32, 3), dtype=np.float32))


def test_nothing_listening_is_unreachable(edge_manifest):
    with EdgeBackend(f"127.0.0.1:{free_port()}", edge_manifest) as backend:
        assert failure(lambda: backend.infer(np.zeros((1, 3, 32, 32), np.float32), 2)).kind == FailureKind.UNREACHABLE
        assert failure(lambda: backend.probe(2)).kind == FailureKind.UNREACHABLE


def test_closed_backend_is_unreachable(edge_server, edge_manifest):
    backend = EdgeBackend(edge_server.url, edge_manifest)
    backend.close()
    assert failure(lambda: backend.probe(2)).kind == FailureKind.UNREACHABLE


@pytest.mark.parametrize("model_name, problem", [("no_such_model", "NOT_FOUND"),
                                                  ("tiny", "no output ['logits']"),
                                                  ("tiny_logits", "expected FP32 [1, 10]")])
def test_wrong_model_is_a_bad_answer(edge_server, edge_manifest, frames, model_name, problem):
    """Served-but-wrong models: unknown name, other output name, same output name but wrong shape."""
    with EdgeBackend(edge_server.url, edge_manifest, model_name=model_name) as backend:
        error = failure(lambda: backend.infer(frames[:1], timeout_s=10))
    assert error.kind == FailureKind.BAD_ANSWER and problem in error.message


@pytest.mark.parametrize("model_name", ["tiny", "tiny_logits"])
def test_probe_of_a_ready_but_wrong_model_is_a_bad_answer(edge_server, edge_manifest, model_name):
    """Ready is not healthy: the router must not go back to an edge serving other tensors."""
    with EdgeBackend(edge_server.url, edge_manifest, model_name=model_name) as backend:
        error = failure(lambda: backend.probe(5))
    assert error.kind == FailureKind.BAD_ANSWER and "manifest expects" in error.message


def test_message_over_the_size_limit_is_a_bad_answer_not_overload(edge_server, edge_manifest, frames):
    """gRPC reports an oversized message as RESOURCE_EXHAUSTED too; retrying later would not help."""
    with EdgeBackend(edge_server.url, edge_manifest, channel=ChannelSettings(max_message_mb=0.01)) as backend:
        backend.probe(5)
        error = failure(lambda: backend.infer(frames[:2], timeout_s=5))
    assert error.kind == FailureKind.BAD_ANSWER and "larger than max" in error.message


class Status(grpc.RpcError):
    """A status as grpc raises it (code + details), for codes our server never sends."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize("code, details, kind", [
    (grpc.StatusCode.UNAVAILABLE, "Exceeds maximum queue size", FailureKind.OVERLOADED),  # Triton's queue full
    (grpc.StatusCode.UNAVAILABLE, "Socket closed", FailureKind.UNREACHABLE),
    (grpc.StatusCode.CANCELLED, "Channel closed", FailureKind.UNREACHABLE),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", FailureKind.TIMEOUT),
    (grpc.StatusCode.INTERNAL, "onnxruntime failed", FailureKind.BAD_ANSWER),
    (grpc.StatusCode.UNIMPLEMENTED, "", FailureKind.BAD_ANSWER)])
def test_status_codes_map_to_failure_kinds(code, details, kind):
    error = failure_from_rpc(Status(code, details), "ModelInfer m@host")
    assert error.kind == kind and code.name in error.message and details in error.message


def answer(model="cifar10_resnet56", version="1", name="logits", datatype="FP32", shape=(1, 10), nbytes=40):
    tensor = service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
    return service_pb2.ModelInferResponse(model_name=model, model_version=version, outputs=[tensor],
                                          raw_output_contents=[b"\0" * nbytes])


@pytest.mark.parametrize("response, problem", [
    (answer(model="other"), "model 'other'"), (answer(version="2"), "version '2'"),
    (answer(name="probs"), "outputs ['probs']"), (answer(datatype="FP16", nbytes=20), "FP16"),
    (answer(shape=(2, 10)), "[2, 10]"), (answer(nbytes=39), "39 bytes")])
def test_answers_not_matching_the_manifest_are_rejected(edge_manifest, response, problem):
    """Answers a real Triton could send for a misconfigured model (checked without a server)."""
    backend = EdgeBackend("127.0.0.1:1", edge_manifest, model_version="1")
    error = failure(lambda: backend._check_answer(response, rows=1))
    backend.close()
    assert error.kind == FailureKind.BAD_ANSWER and problem in error.message


def test_frozen_server_times_out_within_the_deadline(edge_repository, start_edge_server, edge_manifest, frames):
    server = start_edge_server(edge_repository)
    with EdgeBackend(server.url, edge_manifest) as backend:
        backend.infer(frames[:1], timeout_s=10)  # connected
        freeze_group(server.proc)
        started = time.monotonic()
        error = failure(lambda: backend.infer(frames[:1], timeout_s=DEADLINE_S))
        elapsed = time.monotonic() - started
        assert error.kind == FailureKind.TIMEOUT and elapsed < DEADLINE_S + SLACK_S
        # Once keepalive has declared the silent link dead, calls fail at once as UNREACHABLE.
        started = time.monotonic()
        error = failure(lambda: backend.probe(DEADLINE_S))
        assert error.kind in (FailureKind.TIMEOUT, FailureKind.UNREACHABLE)
        assert time.monotonic() - started < DEADLINE_S + SLACK_S
        thaw_group(server.proc)
        assert backend.infer(frames[:1], timeout_s=10).shape == (1, 10)


def test_keepalive_notices_a_frozen_server_between_calls(edge_repository, start_edge_server, edge_manifest):
    """No call in flight, the link silently dead: keepalive pings (2 s, 1 s timeout) drop the
    connection, so the next call does not wait on a dead socket."""
    server = start_edge_server(edge_repository)
    states: list[grpc.ChannelConnectivity] = []
    dropped = threading.Event()

    def watch(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        if grpc.ChannelConnectivity.READY in states and state != grpc.ChannelConnectivity.READY:
            dropped.set()

    settings = ChannelSettings(keepalive_s=1.0, keepalive_timeout_s=0.5)
    with EdgeBackend(server.url, edge_manifest, channel=settings) as backend:
        backend.probe(5)
        backend._channel.subscribe(watch)  # the channel's own view of the connection
        freeze_group(server.proc)
        assert dropped.wait(10), f"connection still considered alive; states seen: {states}"
        thaw_group(server.proc)


def test_restarted_server_is_used_again_without_a_new_backend(edge_repository, start_edge_server,
                                                              edge_manifest, frames):
    first = start_edge_server(edge_repository)
    with EdgeBackend(first.url, edge_manifest) as backend:
        backend.infer(frames[:1], timeout_s=10)
        first.kill()
        assert failure(lambda: backend.infer(frames[:1], timeout_s=2)).kind == FailureKind.UNREACHABLE
        start_edge_server(edge_repository, port=first.port)

        def answers() -> bool:
            try:
                return backend.infer(frames[:1], timeout_s=2).shape == (1, 10)
            except BackendError:
                return False

        # the channel retries on its own, at most max_reconnect_backoff_s apart
        wait_until(answers, 15, "the backend to reconnect to the restarted server", interval_s=0.1)
