"""Server start-up errors, and graceful SIGTERM: in-flight requests finish, new ones are refused."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.edge.config import TOKEN_ENV
from robot_compress.runtime.polling import wait_until
from tests.conftest import EDGE_MODEL
from tests.edge.certs import make_pki
from tests.edge.conftest import EDGE_NAME
from tests.edge_models import link_model

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
    assert result.returncode == 2 and "missing field 'tls.cert' (--tls-cert)" in result.stderr, result.stderr


@pytest.mark.parametrize("flag, value", [
    ("--port", "70000"), ("--port", "-1"), ("--max-message-mb", "0"), ("--max-message-mb", "-1"),
    ("--max-message-mb", "5000"), ("--threads", "0"), ("--grace-s", "-1"), ("--max-concurrent-rpcs", "0"),
    ("--default-queue-size", "0"), ("--receive-timeout-s", "0"), ("--max-streams-per-connection", "0"),
    ("--max-open-calls", "0"), ("--max-open-calls", "10"),  # fewer than --max-concurrent-rpcs (64)
])
def test_out_of_range_flag_is_refused_naming_it(edge_repository, flag, value):
    result = run_cli("--model-repository", str(edge_repository), "--host", "127.0.0.1", flag, value)
    assert result.returncode == 2, result.stderr
    assert f"({flag})" in result.stderr and "must be" in result.stderr and value in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content", ["", "   \n", "\n\t\n"], ids=["empty", "spaces", "whitespace"])
def test_empty_token_file_is_refused(edge_repository, tmp_path, content):
    (tmp_path / "token").write_text(content)
    result = run_cli("--model-repository", str(edge_repository), "--port", "0", "--token-file", str(tmp_path / "token"))
    assert result.returncode == 2 and "(--token-file" in result.stderr, result.stderr
    assert "empty or only whitespace" in result.stderr


def test_whitespace_token_environment_variable_is_refused(edge_repository):
    result = subprocess.run([sys.executable, "-m", "robot_compress.cli", "edge-serve", "--model-repository",
                             str(edge_repository), "--port", "0"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, TOKEN_ENV: "  "})
    assert result.returncode == 2 and f"field 'token' (${TOKEN_ENV}): is empty" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def two_pkis(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki_a")), make_pki(tmp_path_factory.mktemp("pki_b"), server_expired=True)


def test_certificate_and_key_mismatch_is_named(edge_repository, two_pkis):
    first, second = two_pkis
    result = run_cli("--model-repository", str(edge_repository), "--port", "0",
                     "--tls-cert", str(first.server_cert), "--tls-key", str(second.server_key))
    assert result.returncode == 2 and "the key does not belong to the certificate" in result.stderr, result.stderr
    assert "port in use" not in result.stderr


def test_garbage_client_ca_is_named(edge_repository, two_pkis, tmp_path):
    first, _ = two_pkis
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    result = run_cli("--model-repository", str(edge_repository), "--port", "0", "--tls-cert", str(first.server_cert),
                     "--tls-key", str(first.server_key), "--tls-client-ca", str(tmp_path / "ca.pem"))
    assert result.returncode == 2 and "--tls-client-ca" in result.stderr and "not a PEM" in result.stderr
    assert "port in use" not in result.stderr


def test_expired_server_certificate_starts_with_a_warning(edge_repository, two_pkis, start_edge_server):
    _, expired = two_pkis
    server = start_edge_server(edge_repository, "--tls-cert", str(expired.server_cert),
                               "--tls-key", str(expired.server_key))
    assert "event=certificate_expired" in server.log_text()


@pytest.mark.parametrize("pbtxt_edit, field", [
    (("max_queue_delay_microseconds: 500", "max_queue_delay_microseconds: 18446744073709551615"),
     "dynamic_batching.max_queue_delay_microseconds 18446744073709551615"),
    (("count: 1", "count: 5000"), "instance_group[0].count 5000"),
], ids=["queue delay", "instances"])
def test_out_of_range_batching_config_is_refused_naming_the_field(tmp_path, pbtxt_edit, field):
    root = link_model(EDGE_MODEL, tmp_path, max_batch_size=8, max_queue_delay_us=500, max_queue_size=4)
    config = root / "config.pbtxt"
    old, new = pbtxt_edit
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))
    result = run_cli("--model-repository", str(tmp_path), "--port", "0")
    assert result.returncode == 2 and field in result.stderr, result.stderr
    assert re.search(r"is outside|is out of range", result.stderr), result.stderr  # with the accepted range


def test_second_signal_cuts_the_grace_period_short(edge_repository, start_edge_server):
    server = start_edge_server(edge_repository, "--grace-s", "60", "--receive-timeout-s", "60")
    release = threading.Event()

    def nothing():
        release.wait(60)
        yield from ()

    with grpc.insecure_channel(server.url) as channel:
        held = channel.stream_unary("/inference.GRPCInferenceService/ModelInfer", lambda b: b,
                                    lambda b: b).future(nothing())
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.proc.poll() is None, "the held call should keep the graceful stop waiting"
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - signalled < 10
        release.set()
        held.cancel()
    assert "event=stop_forced" in server.log_text()
