"""Every malformed request gets INVALID_ARGUMENT / NOT_FOUND naming the problem, and the server
keeps serving: the next good request succeeds."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.conftest import MAX_MESSAGE_MB
from tests.edge.conftest import EDGE_NAME

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
Tensor = service_pb2.ModelInferRequest.InferInputTensor


def request(model=EDGE_NAME, version="", name="input", datatype="FP32", shape=(1, 3, 32, 32), raw=None,
            outputs=(), dtype=np.float32):
    """A ModelInferRequest, valid unless an argument says otherwise."""
    if raw is None:
        raw = [np.zeros(shape, dtype=dtype).tobytes()]
    return service_pb2.ModelInferRequest(
        model_name=model, model_version=version, inputs=[Tensor(name=name, datatype=datatype, shape=shape)],
        outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outputs],
        raw_input_contents=raw)


def too_big_request():
    rows = int(MAX_MESSAGE_MB * 1024 * 1024 / (3 * 32 * 32 * 4)) + 2
    return request(shape=(rows, 3, 32, 32))


CASES = {
    "unknown model": (request(model="resnet9000"), NOT_FOUND, "unknown model 'resnet9000'"),
    "unknown version": (request(version="7"), NOT_FOUND, "no version '7'"),
    "wrong input name": (request(name="image"), INVALID, "input 'input'"),
    "two inputs": (service_pb2.ModelInferRequest(
        model_name=EDGE_NAME, inputs=[Tensor(name="input", datatype="FP32", shape=[1, 3, 32, 32])] * 2,
        raw_input_contents=[b"\0" * 12288] * 2), INVALID, "exactly one input"),
    "no inputs": (service_pb2.ModelInferRequest(model_name=EDGE_NAME), INVALID, "exactly one input"),
    "wrong dtype": (request(datatype="FP64", dtype=np.float64), INVALID, "must be FP32, got FP64"),
    "wrong shape": (request(shape=(1, 3, 28, 28)), INVALID, "shape [N, 3, 32, 32]"),
    "missing batch dimension": (request(shape=(3, 32, 32)), INVALID, "shape [N, 3, 32, 32]"),
    "batch over max_batch_size": (request(shape=(33, 3, 32, 32)), INVALID, "batch size 33 is outside 1..32"),
    "zero batch": (request(shape=(0, 3, 32, 32)), INVALID, "batch size 0"),
    "byte count": (request(raw=[b"\0" * 1000]), INVALID, "1000 bytes"),
    "raw contents count": (request(raw=[b"\0" * 12288] * 2), INVALID, "raw_input_contents has 2 entries"),
    "no data": (request(raw=[]), INVALID, "has 0 values"),
    "unknown output": (request(outputs=["probabilities"]), INVALID, "no output ['probabilities']"),
    "oversized message": (too_big_request(), INVALID, "--max-message-mb"),
    "contents and raw": (service_pb2.ModelInferRequest(
        model_name=EDGE_NAME, raw_input_contents=[b"\0" * 12288], inputs=[Tensor(
            name="input", datatype="FP32", shape=[1, 3, 32, 32],
            contents=service_pb2.InferTensorContents(fp32_contents=[1.0]))]),
        INVALID, "both contents and raw_input_contents"),
}


@pytest.fixture(scope="module")
def stub(edge_server):
    with grpc.insecure_channel(edge_server.url, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def assert_serving(stub):
    response = stub.ModelInfer(request(), timeout=10)
    assert response.model_name == EDGE_NAME and list(response.outputs[0].shape) == [1, 10]


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_infer_is_rejected_and_server_keeps_serving(stub, case):
    bad, code, message = CASES[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(bad, timeout=10)
    assert error.value.code() == code
    assert message in error.value.details()
    assert_serving(stub)


def test_metadata_of_unknown_model_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"), timeout=10)
    assert error.value.code() == NOT_FOUND and "unknown model 'nope'" in error.value.details()
    assert_serving(stub)


def test_rejections_are_logged_one_line_each(stub, edge_server):
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(request(name="camera"), timeout=10)
    lines = [line for line in edge_server.log_text().splitlines() if "camera" in line]
    assert lines and all("event=rejected" in line and "code=INVALID_ARGUMENT" in line for line in lines)
