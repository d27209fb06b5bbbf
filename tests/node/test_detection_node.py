"""perception_node as a process with the shipped robot detector: a real coco/val_dev photo on the
camera topic, its detections out in the photo's own pixels, the annotated frame while someone
watches, the detection parameters, and an edge model of another task refused at start."""

from __future__ import annotations

import json
import subprocess
import time

import cv2
import numpy as np
import pytest

from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.polling import wait_until
from tests.conftest import EDGE_MODEL, MODELS
from tests.node.conftest import TOPIC, image_msg, node_spec, stamp_key

pytestmark = pytest.mark.timeout(90)

ROBOT_DETECTOR = MODELS / "robot_yolox_nano_320"


@pytest.fixture(scope="module")
def photo(shared_data) -> tuple[np.ndarray, list[list[float]]]:
    """The 640x480 val_dev photo with the most people in it (BGR) and its ground-truth person boxes."""
    data = shared_data / "coco" / "val_dev"
    info = json.loads((data / "instances.json").read_text())
    people: dict[int, list[list[float]]] = {}
    for a in info["annotations"]:
        if a["category_id"] == 1 and not a["iscrowd"] and a["area"] > 2000:
            x, y, w, h = a["bbox"]
            people.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    entry = max((i for i in info["images"] if (i["width"], i["height"]) == (640, 480)),
                key=lambda i: len(people.get(i["id"], [])))
    return cv2.imread(str(data / "images" / entry["file_name"])), people[entry["id"]]


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def publish_photo(listener, image: np.ndarray, stamp_sec: int):
    """Publish `image` as a bgr8 sensor_msgs/Image until the node answers it; returns its result."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    images = listener.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    wait_until(lambda: images.get_subscription_count(), 10, "the node to subscribe")
    time.sleep(0.5)  # let the node's side of the match settle too
    msg = image_msg(stamp_sec, encoding="bgr8", height=image.shape[0], width=image.shape[1],
                    data=np.ascontiguousarray(image).tobytes())

    def answered():
        found = [r for r in listener.snapshot("results") if stamp_key(r["stamp"]) == (stamp_sec, 0)]
        if not found:
            images.publish(msg)  # best-effort camera QoS: publish again until it is answered
        return found and found[0]
    return wait_until(answered, 30, "the node's detections", interval_s=1.0)


def test_detector_node_publishes_detections_in_image_pixels(processes, listener, photo):
    """The robot's 320 INT8 model on a 640x480 photo: the node letterboxes it, and publishes the
    boxes the same model gives in process, in the photo's pixels, people where the photo's
    ground truth has them; ~/annotated carries the photo with the boxes drawn."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    image, people = photo
    annotated = []
    listener.node.create_subscription(Image, "/perception_node/annotated", annotated.append, qos_profile_sensor_data)
    processes.start_spec(node_spec("", local_model=str(ROBOT_DETECTOR)))
    listener.wait_for_backend("local", 30)
    result = publish_photo(listener, image, 7)

    assert (result["backend"], result["state"], result["error"]) == ("local", "local", None)
    assert result["latency_ms"] > 0 and "detections" in result
    expected = LocalBackend(ROBOT_DETECTOR).detect([image])[0]
    found = result["detections"]
    assert len(found) == len(expected) >= 3
    assert [d["label"] for d in found] == [d.label for d in expected]
    np.testing.assert_allclose([d["box"] for d in found], [[d.x1, d.y1, d.x2, d.y2] for d in expected], atol=0.02)
    boxes = np.array([d["box"] for d in found])
    assert boxes[:, [0, 2]].max() <= 640 and boxes[:, [1, 3]].max() <= 480
    assert boxes[:, [1, 3]].max() > 320  # beyond the model's 320 input: mapped back to the photo
    assert all(d["score"] > 0.3 for d in found)  # the manifest's score_threshold
    person_boxes = [d["box"] for d in found if d["label"] == "person"]
    matched = [p for p in people if any(iou(p, box) > 0.5 for box in person_boxes)]
    assert len(matched) >= min(2, len(people))

    wait_until(lambda: annotated, 10, "~/annotated")
    drawn = annotated[0]
    assert (drawn.height, drawn.width, drawn.encoding, stamp_key(drawn.header.stamp)) == (480, 640, "bgr8", (7, 0))
    pixels = np.frombuffer(bytes(drawn.data), np.uint8).reshape(480, 640, 3)
    assert (pixels != image).any(axis=2).mean() > 0.005  # boxes and labels drawn on the photo


def test_detection_parameters_filter_what_is_published(processes, listener, photo):
    """class_filter keeps only the named classes, score_threshold and max_detections trim the rest."""
    image, _ = photo
    node = processes.start_spec(node_spec("", local_model=str(ROBOT_DETECTOR), class_filter="person, dog",
                                          score_threshold=0.5, max_detections=2, publish_annotated=False))
    listener.wait_for_backend("local", 30)
    found = publish_photo(listener, image, 8)["detections"]
    expected = [d for d in LocalBackend(ROBOT_DETECTOR).detect([image], score_threshold=0.5)[0]
                if d.label in ("person", "dog")][:2]
    assert len(found) == 2 and [d["label"] for d in found] == [d.label for d in expected]
    assert all(d["score"] > 0.5 for d in found)
    processes.stop(node)  # deadline_ms not given: the start-up line names the detection default
    assert "deadline 250 ms (the detection default, deadline_ms 0), detection" in processes.output(node)


@pytest.mark.parametrize(("parameters", "message"), [
    ({"class_filter": "person,unicorn"}, "parameter 'class_filter': ['unicorn'] not among model "
                                         "'robot_yolox_nano_320' labels"),
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"hedge_after_ms": 300.0}, "hedge_after_ms (300) must be below deadline_ms (250, the detection default)"),
])
def test_bad_detection_parameters_stop_the_node(ros_domain_id, parameters, message):
    command = node_spec("", local_model=str(ROBOT_DETECTOR), **parameters).command()
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("local", "edge", "tasks"), [
    (ROBOT_DETECTOR, EDGE_MODEL.name, ("detection", "classification")),
    (MODELS / "robot_small", "coco_yolox_nano_640", ("classification", "detection")),
])
def test_edge_model_of_another_task_stops_the_node_naming_both(processes, edge_server, local, edge, tasks):
    """A detector and a classifier cannot stand in for each other, whichever is on the robot."""
    node = processes.start_spec(node_spec(edge_server.url, local_model=str(local), edge_model=edge))
    assert node.wait(30) == 2
    log = processes.output(node)
    assert (f"local model '{local.name}'" in log and f"is a {tasks[0]} model but edge model '{edge}'" in log
            and f"is a {tasks[1]} model" in log), log
    assert "Traceback" not in log


def test_detector_node_uses_the_640_edge_model_and_answers_in_image_pixels(processes, listener, edge_server, photo):
    """Robot 320 model, edge 640 model behind a real edge server: the frame goes to the edge,
    letterboxed at 640, and the published boxes are the 640 model's, in the photo's pixels."""
    image, _ = photo
    node = processes.start_spec(node_spec(edge_server.url, local_model=str(ROBOT_DETECTOR),
                                          edge_model="coco_yolox_nano_640", deadline_ms=10000.0,
                                          probe_timeout_ms=2000.0, recovery_probes=1))
    listener.wait_for_backend("edge", 30)
    result = publish_photo(listener, image, 9)
    assert result["backend"] == "edge", result
    expected = LocalBackend(MODELS / "coco_yolox_nano_640").detect([image])[0]
    assert len(result["detections"]) == len(expected) >= 3
    assert [d["label"] for d in result["detections"]] == [d.label for d in expected]
    np.testing.assert_allclose([d["box"] for d in result["detections"]],
                               [[d.x1, d.y1, d.x2, d.y2] for d in expected], atol=0.02)
    processes.stop(node)
    assert "deadline 10000 ms (set by deadline_ms), detection" in processes.output(node)
