"""Detection through the real backends and the router: the shipped 320 INT8 robot detector in
process, the shipped 640 edge detector behind a real edge server on loopback. Every answer is in
the camera image's own pixels, whichever backend gave it, and the router passes it through."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from robot_compress.edge.process import EdgeServerProcess
from robot_compress.runtime.backend import BackendError, FailureKind
from robot_compress.runtime.detection import ImageDetector, rows_to_detections
from robot_compress.runtime.edge_client import ChannelSettings, EdgeBackend
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.perception_config import RouterConfig
from robot_compress.runtime.polling import wait_until
from robot_compress.runtime.router import Router, RouterState
from tests.conftest import EDGE_MODEL, MODELS
from tests.edge_models import link_model

EDGE_DETECTOR = MODELS / "coco_yolox_nano_640"
ROBOT_DETECTOR = MODELS / "robot_yolox_nano_320"


@pytest.fixture(scope="module")
def camera_frames(shared_data) -> list[np.ndarray]:
    """Two coco/val_dev images as a 640x480 camera gives them (BGR), and the image with the most boxes."""
    data = shared_data / "coco" / "val_dev"
    info = json.loads((data / "instances.json").read_text())
    counts = {}
    for annotation in info["annotations"]:
        counts[annotation["image_id"]] = counts.get(annotation["image_id"], 0) + 1
    sized = sorted((-counts.get(i["id"], 0), i["file_name"]) for i in info["images"]
                   if (i["width"], i["height"]) == (640, 480))
    return [cv2.imread(str(data / "images" / name)) for _, name in sized[:2]]


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection_repository")
    for model in (EDGE_DETECTOR, ROBOT_DETECTOR, EDGE_MODEL):
        link_model(model, root, max_batch_size=4)
    return root


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    process = EdgeServerProcess(repository, tmp_path_factory.mktemp("edge") / "server.log").start()
    yield process
    process.stop()


def boxes(found) -> np.ndarray:
    return np.array([[d.x1, d.y1, d.x2, d.y2, d.score, d.class_id] for d in found])


def test_edge_client_serves_the_edge_size_and_answers_in_image_pixels(server, camera_frames):
    """The robot's client starts from the robot's 320 manifest; the probe reads the edge model's
    metadata and takes its 640 input, so the frame is letterboxed at 640 and the boxes equal the
    640 model's run in process, in the 640x480 image's pixels."""
    robot = LocalBackend(ROBOT_DETECTOR)
    with EdgeBackend(server.url, robot.manifest, model_name=EDGE_DETECTOR.name, default_timeout_s=20.0) as edge:
        assert edge.served_task(5.0) == "detection"
        edge.probe(5.0)
        assert edge.manifest.input.shape == (640, 640, 3)
        from_edge = edge.detect(camera_frames, score_threshold=0.3)
    in_process = LocalBackend(EDGE_DETECTOR).detect(camera_frames, score_threshold=0.3)
    assert sum(map(len, from_edge)) >= 5
    for edge_found, local_found in zip(from_edge, in_process, strict=True):
        np.testing.assert_allclose(boxes(edge_found), boxes(local_found), atol=1e-2)
        xy = boxes(edge_found)[:, :4]
        assert xy[:, [0, 2]].max() <= 640 and xy[:, [1, 3]].max() <= 480
        assert xy[:, [1, 3]].max() > 320  # beyond the 320 letterbox: these are image pixels


def test_local_and_edge_give_the_same_detections_for_the_same_model(server, camera_frames):
    """The robot's own 320 INT8 model, once in process and once behind the edge server: the same
    boxes, the same classes, in the same image pixels."""
    local = LocalBackend(ROBOT_DETECTOR)
    with EdgeBackend(server.url, local.manifest, default_timeout_s=20.0) as edge:
        edge.probe(5.0)
        from_edge = edge.detect(camera_frames)
    from_local = local.detect(camera_frames)
    assert sum(map(len, from_local)) >= 3
    for edge_found, local_found in zip(from_edge, from_local, strict=True):
        assert [d.label for d in edge_found] == [d.label for d in local_found]
        np.testing.assert_allclose(boxes(edge_found), boxes(local_found), atol=1e-2)


def test_router_passes_detections_from_either_backend_in_image_pixels(server, repository, tmp_path, camera_frames):
    """A 640x480 frame through the router: from the edge while it serves, from the robot's model
    once the edge is gone; each equal to that backend's own answer, in the frame's pixels."""
    local = LocalBackend(ROBOT_DETECTOR)
    own = EdgeServerProcess(repository, tmp_path / "server.log").start()
    edge = EdgeBackend(own.url, local.manifest, model_name=EDGE_DETECTOR.name, default_timeout_s=20.0,
                       channel=ChannelSettings(max_reconnect_backoff_s=0.1))
    config = RouterConfig(deadline_ms=20000.0, probe_period_ms=50.0, probe_timeout_ms=5000.0, recovery_probes=1)
    router = Router(ImageDetector(local), ImageDetector(edge), config)
    frame = camera_frames[0]
    labels = local.manifest.labels
    try:
        wait_until(lambda: router.state is RouterState.EDGE, 30.0, "the router to use the edge")
        via_edge = router.classify(frame[None])
        own.kill()
        via_local = router.classify(frame[None])
    finally:
        router.close()
        edge.close()
        own.stop()
    assert (via_edge.backend, via_local.backend) == ("edge", "local")
    assert via_local.edge_failure in {FailureKind.UNREACHABLE.value, FailureKind.TIMEOUT.value}
    for result, expected in ((via_edge, LocalBackend(EDGE_DETECTOR).detect([frame], score_threshold=0.3)[0]),
                             (via_local, local.detect([frame], score_threshold=0.3)[0])):
        assert result.logits.shape == (1, 100, 6)
        found = rows_to_detections(result.logits[0], labels, 0.3)
        assert len(found) >= 3
        np.testing.assert_allclose(boxes(found), boxes(expected), atol=1e-2)


def test_edge_serving_a_classifier_is_refused_naming_both_tasks(server):
    """A classification model under the name the robot's detector asks for: not served to it."""
    local = LocalBackend(ROBOT_DETECTOR)
    with EdgeBackend(server.url, local.manifest, model_name=EDGE_MODEL.name) as edge:
        assert edge.served_task(5.0) == "classification"
        with pytest.raises(BackendError) as caught:
            edge.probe(5.0)
    assert caught.value.kind is FailureKind.BAD_ANSWER
    assert "classification" in str(caught.value) and "detection" in str(caught.value)
    assert EDGE_MODEL.name in str(caught.value) and ROBOT_DETECTOR.name in str(caught.value)
