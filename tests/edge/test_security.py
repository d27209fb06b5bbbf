"""Bearer token and (mutual) TLS, with certificates generated at test time."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from robot_compress.runtime.backend import BackendError, FailureKind
from robot_compress.runtime.edge_client import EdgeBackend
from tests.edge.certs import make_pki
from tests.edge.conftest import EDGE_NAME

TOKEN = "s3cret-robot-token"
BATCH = np.zeros((1, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def token_server(edge_repository, tmp_path_factory):
    from robot_compress.edge.process import EdgeServerProcess

    directory = tmp_path_factory.mktemp("token")
    (directory / "token").write_text(TOKEN + "\n")
    server = EdgeServerProcess(edge_repository, directory / "server.log", "--token-file", str(directory / "token"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(edge_repository, pki, tmp_path_factory):
    from robot_compress.edge.process import EdgeServerProcess

    server = EdgeServerProcess(edge_repository, tmp_path_factory.mktemp("mtls") / "server.log",
                               "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                               "--tls-client-ca", str(pki.ca))
    yield server.start()
    server.stop()


def status_of(call) -> str:
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value.status()


@pytest.mark.parametrize("headers", [None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}],
                         ids=["no token", "wrong token", "no Bearer prefix"])
def test_calls_without_the_token_are_unauthenticated(token_server, headers):
    with triton.InferenceServerClient(token_server.url) as client:
        assert status_of(lambda: client.is_server_live(headers=headers)) == "StatusCode.UNAUTHENTICATED"
        tensor = triton.InferInput("input", [1, 3, 32, 32], "FP32")
        tensor.set_data_from_numpy(BATCH)
        assert status_of(lambda: client.infer(EDGE_NAME, [tensor], headers=headers)) == "StatusCode.UNAUTHENTICATED"


def test_calls_with_the_token_succeed(token_server, edge_manifest):
    with triton.InferenceServerClient(token_server.url) as client:
        assert client.is_server_ready(headers={"authorization": f"Bearer {TOKEN}"})
    with EdgeBackend(token_server.url, edge_manifest, token=TOKEN) as backend:
        assert backend.probe(timeout_s=5) > 0
        assert backend.infer(BATCH, timeout_s=5).shape == (1, 10)


def test_edge_backend_without_the_token_fails_as_bad_answer(token_server, edge_manifest):
    with EdgeBackend(token_server.url, edge_manifest, token="guess") as backend, \
            pytest.raises(BackendError) as error:
        backend.infer(BATCH, timeout_s=5)
    assert error.value.kind == FailureKind.BAD_ANSWER and "UNAUTHENTICATED" in error.value.message


def test_plaintext_client_cannot_connect_to_tls_server(mtls_server):
    with triton.InferenceServerClient(mtls_server.url) as client:
        assert status_of(lambda: client.is_server_live(client_timeout=5)) == "StatusCode.UNAVAILABLE"


def test_tls_client_without_a_client_certificate_is_refused(mtls_server, pki, edge_manifest):
    with EdgeBackend(mtls_server.url, edge_manifest, root_certificates=pki.ca.read_bytes()) as backend, \
            pytest.raises(BackendError) as error:
        backend.probe(timeout_s=5)
    assert error.value.kind == FailureKind.UNREACHABLE


def test_mutual_tls_clients_are_served(mtls_server, pki, edge_manifest):
    with triton.InferenceServerClient(mtls_server.url, ssl=True, root_certificates=str(pki.ca),
                                      private_key=str(pki.client_key),
                                      certificate_chain=str(pki.client_cert)) as client:
        assert client.is_server_ready()
    with EdgeBackend(f"grpcs://{mtls_server.url}", edge_manifest, root_certificates=pki.ca.read_bytes(),
                     private_key=pki.client_key.read_bytes(),
                     certificate_chain=pki.client_cert.read_bytes()) as backend:
        assert backend.infer(BATCH, timeout_s=5).shape == (1, 10)
