"""The detection contract against both servers: the shipped 640 edge detector served by the
project's edge server and by a real Triton (its Python-backend twin) has the same metadata, gives
the same rows for a real coco/val_dev photo, and the robot's EdgeBackend.detect (starting from the
robot's 320 manifest, learning 640 from the metadata) returns the same boxes through either."""

from __future__ import annotations

import json

import cv2
import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from robot_compress.runtime.detection import letterbox
from robot_compress.runtime.edge_client import EdgeBackend
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.model_contract import ModelDir
from tests.conftest import MODELS
from tests.triton.conftest import EDGE_DETECTOR

ROBOT_DETECTOR = MODELS / "robot_yolox_nano_320"


@pytest.fixture(scope="module")
def photo(shared_data) -> np.ndarray:
    """The 640x480 coco/val_dev photo with the most annotations (BGR): many boxes to compare."""
    data = shared_data / "coco" / "val_dev"
    info = json.loads((data / "instances.json").read_text())
    counts: dict[int, int] = {}
    for annotation in info["annotations"]:
        counts[annotation["image_id"]] = counts.get(annotation["image_id"], 0) + 1
    entry = max((i for i in info["images"] if (i["width"], i["height"]) == (640, 480)),
                key=lambda i: counts.get(i["id"], 0))
    return cv2.imread(str(data / "images" / entry["file_name"]))


@pytest.fixture(scope="module")
def detector() -> ModelDir:
    return ModelDir.load(EDGE_DETECTOR)


def metadata_of(server, name: str):
    with grpc.insecure_channel(server.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name), timeout=10)


def test_detector_metadata_is_the_detection_contract(server, detector):
    metadata = metadata_of(server, detector.name)
    tensors = [(t.name, t.datatype, list(t.shape)) for t in (*metadata.inputs, *metadata.outputs)]
    assert tensors == [("images", "UINT8", [-1, 640, 640, 3]), ("detections", "FP32", [-1, 100, 6])]
    with EdgeBackend(server.url, detector.manifest) as edge:
        assert edge.served_task(10.0) == "detection"
        assert 0 < edge.probe(10.0) < 10


def test_both_servers_answer_a_photo_with_the_same_rows(edge_server, triton, detector, photo):
    """Raw [100, 6] rows (letterboxed 640 pixels, score, class) for one real photo, one frame and a
    batch of two, from each server and from ONNX Runtime in process."""
    frame = letterbox(photo, 640)[0]
    expected = LocalBackend(detector).infer(frame[None])[0]
    assert (expected[:, 4] > 0.3).sum() >= 5  # a photo with boxes worth comparing
    answers = {}
    for server in (edge_server, triton):
        with EdgeBackend(server.url, detector.manifest, default_timeout_s=30.0) as edge:
            one = edge.infer(frame[None])
            two = edge.infer(np.stack([frame, frame[:, ::-1].copy()]))
        assert one.shape == (1, 100, 6) and one.dtype == np.float32 and two.shape == (2, 100, 6)
        np.testing.assert_allclose(two[0], one[0], atol=1e-3)
        answers[server] = one[0]
    for rows in answers.values():
        np.testing.assert_array_equal(rows[:, 5], expected[:, 5])  # the same classes, in the same order
        np.testing.assert_allclose(rows, expected, atol=1e-3)
    np.testing.assert_allclose(answers[edge_server], answers[triton], atol=1e-3)


def test_robot_edge_backend_detects_the_same_boxes_through_both(edge_server, triton, photo):
    """The robot's client as the node uses it: the robot's 320 manifest, the served model's 640
    size learnt by the probe, boxes in the photo's own pixels; Triton's equal the edge server's."""
    robot = LocalBackend(ROBOT_DETECTOR).manifest
    found = {}
    for server in (edge_server, triton):
        with EdgeBackend(server.url, robot, model_name=EDGE_DETECTOR.name, default_timeout_s=30.0) as edge:
            edge.probe(10.0)
            assert edge.manifest.input.shape == (640, 640, 3)
            found[server] = edge.detect([photo], score_threshold=0.3)[0]
    via_edge, via_triton = found[edge_server], found[triton]
    assert len(via_edge) >= 5
    assert [d.label for d in via_triton] == [d.label for d in via_edge]
    as_rows = [np.array([[d.x1, d.y1, d.x2, d.y2, d.score] for d in boxes]) for boxes in (via_edge, via_triton)]
    np.testing.assert_allclose(as_rows[1], as_rows[0], atol=1e-2)
    assert as_rows[0][:, [1, 3]].max() > 320  # beyond the robot's 320 letterbox: the photo's pixels
