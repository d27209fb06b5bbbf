"""The official tritonclient gRPC client against our edge server: health, metadata and inference."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton

from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.preprocess import preprocess_batch
from tests.conftest import EDGE_MODEL
from tests.edge.conftest import EDGE_NAME


@pytest.fixture
def client(edge_server):
    with triton.InferenceServerClient(edge_server.url) as client:
        yield client


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(EDGE_NAME)
    assert client.is_model_ready(EDGE_NAME, "1")
    assert not client.is_model_ready(EDGE_NAME, "2")
    assert not client.is_model_ready("no_such_model")
    assert client.get_server_metadata().name == "robot_compress"
    meta = client.get_model_metadata(EDGE_NAME)
    assert (meta.name, list(meta.versions), meta.platform) == (EDGE_NAME, ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [-1, 3, 32, 32])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("logits", "FP32", [-1, 10])]
    config = client.get_model_config(EDGE_NAME).config
    assert (config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds) == (32, 500)


def test_same_top1_as_local_backend_on_500_cifar_images(client, cifar_test_dev, edge_manifest):
    data = cifar_test_dev.subset(np.arange(500))
    local = LocalBackend(EDGE_MODEL)
    batch = preprocess_batch(data.images, "rgb8", edge_manifest.preprocessing)
    edge_logits = []
    for start in range(0, len(batch), 25):
        chunk = batch[start:start + 25]
        tensor = triton.InferInput("input", list(chunk.shape), "FP32")
        tensor.set_data_from_numpy(chunk)
        result = client.infer(EDGE_NAME, [tensor], outputs=[triton.InferRequestedOutput("logits")])
        assert result.get_response().model_name == EDGE_NAME
        edge_logits.append(result.as_numpy("logits"))
    edge_top1 = np.argmax(np.concatenate(edge_logits), axis=1)
    local_top1 = np.argmax(local.infer(batch), axis=1)
    assert np.array_equal(edge_top1, local_top1)
    accuracy = float((edge_top1 == data.labels).mean())
    assert accuracy > 0.85, f"edge top-1 {accuracy:.3f} on 500 CIFAR-10 images is implausibly low"


def test_typed_contents_give_the_same_answer_as_raw(edge_server, edge_manifest):
    """Clients that send `contents.fp32_contents` instead of raw bytes get the same logits."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=x.shape)
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    with grpc.insecure_channel(edge_server.url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            service_pb2.ModelInferRequest(model_name=EDGE_NAME, inputs=[tensor]), timeout=10)
    logits = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 10)
    np.testing.assert_allclose(logits, LocalBackend(EDGE_MODEL).infer(x), rtol=1e-5, atol=1e-5)


def test_inference_statistics_count_requests_rows_and_executions(client):
    """tritonclient's statistics call sees what the server did (Triton's statistics extension)."""
    def counts():
        (stats,) = client.get_inference_statistics("tiny").model_stats
        return stats.inference_stats.success.count, stats.inference_count, stats.execution_count

    before = counts()
    x = np.ones((3, 3, 32, 32), dtype=np.float32)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    for _ in range(4):
        np.testing.assert_allclose(client.infer("tiny", [tensor]).as_numpy("scores"), np.ones((3, 3)))
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (4, 12)
    assert 1 <= after[2] - before[2] <= 4
    names = [s.name for s in client.get_inference_statistics().model_stats]
    assert names == sorted([EDGE_NAME, "coco_yolox_nano_640", "tiny", "tiny_logits"])
