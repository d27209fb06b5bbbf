"""Clients that open calls and never send a message, forge log lines, or flood the log: the
server keeps answering good clients within their deadline, and its log stays one line per event."""

from __future__ import annotations

import re
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.edge.process import EdgeServerProcess
from robot_compress.runtime.polling import wait_until
from tests.edge.conftest import EDGE_NAME

TOKEN = "good-robot-token"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
BATCH = np.zeros((1, 3, 32, 32), dtype=np.float32)
RECEIVE_TIMEOUT_S = 4.0
STREAMS_PER_CONNECTION = 100
LOG_LINE = re.compile(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=\w+ logger=\S+ ")


def infer_request(model: str = EDGE_NAME) -> service_pb2.ModelInferRequest:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=BATCH.shape)
    return service_pb2.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[BATCH.tobytes()])


@pytest.fixture(scope="module", params=["token", "no token"])
def server(request, edge_repository, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile")
    args = ["--receive-timeout-s", str(RECEIVE_TIMEOUT_S),
            "--max-streams-per-connection", str(STREAMS_PER_CONNECTION)]
    if request.param == "token":
        (directory / "token").write_text(TOKEN + "\n")
        args += ["--token-file", str(directory / "token")]
    process = EdgeServerProcess(edge_repository, directory / "server.log", *args).start()
    process.token = TOKEN if request.param == "token" else None
    yield process
    process.stop()


def metadata(server) -> list[tuple[str, str]] | None:
    return [("authorization", f"Bearer {server.token}")] if server.token else None


class HeaderOnlyCalls:
    """`count` ModelInfer calls, `per_connection` to a connection, that send headers and then
    nothing, as an attacker without the token would (no metadata)."""

    def __init__(self, url: str, count: int, per_connection: int = STREAMS_PER_CONNECTION):
        self.release = threading.Event()
        self.channels = [grpc.insecure_channel(url, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(-(-count // per_connection))]
        self.calls = []
        for i in range(count):
            method = self.channels[i // per_connection].stream_unary(INFER_METHOD, lambda b: b, lambda b: b)
            self.calls.append(method.future(self._nothing()))

    def _nothing(self):
        """A request stream that sends no message: it blocks until released, then ends."""
        self.release.wait(60)
        yield from ()

    def close(self) -> None:
        self.release.set()
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


@pytest.mark.parametrize("count", [64, 500])
def test_header_only_calls_do_not_lock_out_a_good_client(server, count):
    attack = HeaderOnlyCalls(server.url, count)
    try:
        time.sleep(1.0)  # every call's headers have arrived
        with grpc.insecure_channel(server.url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(3):
                started = time.monotonic()
                response = stub.ModelInfer(infer_request(), timeout=2.0, metadata=metadata(server))
                assert response.model_name == EDGE_NAME and time.monotonic() - started < 2.0
            assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=2.0, metadata=metadata(server)).ready
        if server.token:  # refused from the headers alone, without waiting for a message
            assert all(call.done() for call in attack.calls[:STREAMS_PER_CONNECTION])
            assert attack.calls[0].exception().code() == grpc.StatusCode.UNAUTHENTICATED
        else:  # held open, until the receive timeout ends them
            assert not any(call.done() for call in attack.calls[:STREAMS_PER_CONNECTION])
            wait_until(attack.calls[0].done, RECEIVE_TIMEOUT_S + 5, "the receive timeout to end a held call",
                       interval_s=0.1)
            assert attack.calls[0].exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no request message within" in attack.calls[0].exception().details()
    finally:
        attack.close()
    assert server.proc.poll() is None


def test_floods_are_throttled_and_counted_in_the_log(server):
    offset = len(server.log_text())
    calls = 200
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(calls):
            with pytest.raises(grpc.RpcError):
                # without the token: UNAUTHENTICATED; with no token configured: NOT_FOUND
                stub.ModelInfer(infer_request("no-such-model"), timeout=5)
        time.sleep(1.5)  # the throttle lets a line through again
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(infer_request("no-such-model"), timeout=5)
    lines = [line for line in server.log_text()[offset:].splitlines()
             if "event=unauthenticated" in line or "event=rejected" in line]
    assert 1 <= len(lines) <= 25, f"{len(lines)} log lines for {calls + 1} rejected calls"
    last = lines[-1]
    assert re.search(r"total=\d+", last) and int(re.search(r"total=(\d+)", last).group(1)) >= calls + 1
    assert int(re.search(r"dropped_since_last=(\d+)", last).group(1)) > 0


FORGED = "ts=2099-01-01T00:00:00.000Z level=error logger=robot_compress.edge event=forged"


@pytest.mark.parametrize("model_name", [f"x\n{FORGED}", "y" * (1 << 20)], ids=["newline", "1 MiB name"])
def test_model_names_cannot_forge_or_flood_the_log(server, model_name):
    offset = len(server.log_text())
    with grpc.insecure_channel(server.url, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(infer_request(model_name), timeout=10, metadata=metadata(server))
            assert error.value.code() == grpc.StatusCode.NOT_FOUND  # not RESOURCE_EXHAUSTED from a huge echo
            assert len(error.value.details()) < 1000
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=model_name), timeout=10,
                                   metadata=metadata(server))
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
    new = server.log_text()[offset:]
    assert len(new) < 20_000
    assert all(LOG_LINE.match(line) for line in new.splitlines()), new[:2000]
    assert not any(line.startswith(FORGED[:30]) for line in new.splitlines())


def test_method_paths_cannot_forge_the_log(server):
    """Without the token the path is logged (escaped); with no token configured gRPC answers
    UNIMPLEMENTED and nothing is logged."""
    offset = len(server.log_text())
    expected = grpc.StatusCode.UNAUTHENTICATED if server.token else grpc.StatusCode.UNIMPLEMENTED

    def call_with_forged_path() -> str:
        """One call; the log written since `offset`. The earlier floods may have emptied the log
        throttle (a line a second after a burst), so a token server is called until one is logged."""
        with grpc.insecure_channel(server.url) as channel:
            method = channel.unary_unary(f"/x\n{FORGED}", lambda b: b, lambda b: b)
            with pytest.raises(grpc.RpcError) as error:
                method(b"", timeout=5)
        assert error.value.code() == expected
        time.sleep(0.25)
        return server.log_text()[offset:]

    if server.token:
        def logged() -> str:
            text = call_with_forged_path()
            return text if "event=unauthenticated" in text else ""

        new = wait_until(logged, 10, "an unauthenticated call logged")
    else:
        new = call_with_forged_path()
        assert "event=unauthenticated" not in new
    assert all(LOG_LINE.match(line) for line in new.splitlines()), new
    assert not any(line.startswith(FORGED[:30]) for line in new.splitlines())


def test_health_service_answers_without_the_token(server):
    with grpc.insecure_channel(server.url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", EDGE_NAME):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as error:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_open_calls_are_bounded_over_all_connections(edge_repository, start_edge_server):
    """--max-open-calls bounds the calls held open across connections (memory): beyond it gRPC
    refuses at once; once they end, good calls are served again."""
    server = start_edge_server(edge_repository, "--max-open-calls", "40", "--max-concurrent-rpcs", "8",
                               "--max-streams-per-connection", "10")
    attack = HeaderOnlyCalls(server.url, 40, per_connection=10)
    try:
        time.sleep(1.0)
        with grpc.insecure_channel(server.url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(infer_request(), timeout=2.0)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            attack.close()

            def served() -> bool:
                try:
                    return stub.ModelInfer(infer_request(), timeout=2.0).model_name == EDGE_NAME
                except grpc.RpcError:
                    return False

            wait_until(served, 5.0, "calls to be served again after the held ones ended", interval_s=0.1)
    finally:
        attack.close()
