"""perception_node as a process publishing vision_msgs (built by `make venv` where the ROS install has
none): Detection2DArray from the robot detector, Classification from the classifier, each with its
JSON on ~/route; and, with vision_msgs hidden from the node, the std_msgs/String JSON fallback."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.polling import wait_until
from tests.node.conftest import TOPIC, image_msg, node_spec, stamp_key, without_vision_msgs
from tests.node.test_detection_node import ROBOT_DETECTOR, photo  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(90)

FRAME_ID = "camera_rgb_optical_frame"


class Topic:
    """Every message of one topic, in arrival order, from the listener's node."""

    def __init__(self, node, msg_type, name: str):
        from robot_compress.ros.result_recorder import RELIABLE

        self.lock = threading.Lock()
        self.messages: list = []
        node.create_subscription(msg_type, name, self._on, RELIABLE)

    def _on(self, msg) -> None:
        with self.lock:
            self.messages.append(msg)

    def stamped(self, stamp: tuple[int, int]):
        with self.lock:
            return next((m for m in self.messages if stamp_key(m.header.stamp) == stamp), None)


def publish_until(node, image: np.ndarray, encoding: str, stamp_sec: int, answered, what: str):
    """Publish `image` with FRAME_ID (best-effort camera QoS: again each second) until `answered()`."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    images = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    wait_until(lambda: images.get_subscription_count(), 10, "the node to subscribe")
    time.sleep(0.5)  # let the node's side of the match settle too
    msg = image_msg(stamp_sec, encoding=encoding, height=image.shape[0], width=image.shape[1],
                    data=np.ascontiguousarray(image).tobytes())
    msg.header.frame_id = FRAME_ID

    def done():
        found = answered()
        if not found:
            images.publish(msg)
        return found
    return wait_until(done, 30, what, interval_s=1.0)


def route_record(listener, stamp: tuple[int, int]) -> dict | None:
    return next((r for r in listener.snapshot("results") if stamp_key(r["stamp"]) == stamp), None)


# RIHS01 type hashes of upstream vision_msgs, read from rosidl_generator_c's generated
# `*__description.c` files of public ROS 2 builds of the vision_msgs package. A type's hash covers
# every nested type, so equal hashes mean the same wire type as upstream's for every subscriber
# that checks them, nested BoundingBox2D, Pose2D and ObjectHypothesisWithPose included.
UPSTREAM_TYPE_HASHES = {
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
}


def test_the_built_messages_announce_upstream_type_hashes(ros_domain_id, vision_msgs):
    import rclpy
    from vision_msgs import msg

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("type_hashes", context=context)
    try:
        announced = {}
        for name in UPSTREAM_TYPE_HASHES:
            node.create_publisher(getattr(msg, name), f"hash_{name.lower()}", 1)
            (info,) = node.get_publishers_info_by_topic(f"/hash_{name.lower()}")
            announced[name] = str(info.topic_type_hash)
    finally:
        node.destroy_node()
        context.try_shutdown()
    assert announced == UPSTREAM_TYPE_HASHES


def test_detector_publishes_detection2darray_in_image_pixels(processes, listener, photo, vision_msgs):  # noqa: F811
    """The robot's 320 INT8 detector on a 640x480 photo: one Detection2D per box the same model gives
    in process, centre and size in the photo's pixels, the COCO name as class_id, the image's stamp and
    frame in every header; ~/route carries the same boxes as JSON with the routing facts."""
    from vision_msgs.msg import Detection2DArray

    image, _ = photo
    typed = Topic(listener.node, Detection2DArray, "/perception_node/detections")
    processes.start_spec(node_spec("", local_model=str(ROBOT_DETECTOR), publish_annotated=False))
    listener.wait_for_backend("local", 30)
    stamp = (11, 0)
    publish_until(listener.node, image, "bgr8", stamp[0],
                  lambda: typed.stamped(stamp) and route_record(listener, stamp), "typed detections and ~/route")
    msg, record = typed.stamped(stamp), route_record(listener, stamp)

    assert (stamp_key(msg.header.stamp), msg.header.frame_id) == (stamp, FRAME_ID)
    assert (record["backend"], record["frame_id"]) == ("local", FRAME_ID)
    expected = LocalBackend(ROBOT_DETECTOR).detect([image])[0]
    assert len(msg.detections) == len(record["detections"]) == len(expected) >= 3
    labels = set(LocalBackend(ROBOT_DETECTOR).model.manifest.labels)  # COCO's 80 names
    for detection, json_box, want in zip(msg.detections, record["detections"], expected, strict=True):
        assert (stamp_key(detection.header.stamp), detection.header.frame_id) == (stamp, FRAME_ID)
        (hypothesis,) = detection.results
        assert hypothesis.hypothesis.class_id == json_box["label"] == want.label and want.label in labels
        assert hypothesis.hypothesis.score == pytest.approx(json_box["score"], abs=1e-3)
        assert hypothesis.hypothesis.score == pytest.approx(want.score, abs=0.02)
        box = detection.bbox
        x1, y1, x2, y2 = json_box["box"]  # rounded to 0.01 px in the JSON
        assert (box.center.position.x, box.center.position.y) == pytest.approx(((x1 + x2) / 2, (y1 + y2) / 2),
                                                                               abs=0.011)
        assert (box.size_x, box.size_y) == pytest.approx((x2 - x1, y2 - y1), abs=0.011)
        assert box.center.theta == 0.0
        np.testing.assert_allclose([box.center.position.x - box.size_x / 2, box.center.position.y - box.size_y / 2,
                                    box.center.position.x + box.size_x / 2, box.center.position.y + box.size_y / 2],
                                   [want.x1, want.y1, want.x2, want.y2], atol=0.05)
    bottoms = [d.bbox.center.position.y + d.bbox.size_y / 2 for d in msg.detections]
    assert max(bottoms) > 320  # beyond the model's 320 input: mapped back to the photo's 480 rows
    assert all(d.bbox.center.position.x + d.bbox.size_x / 2 <= 640 + 1e-3 for d in msg.detections)


def test_classifier_publishes_classification_with_top_k(processes, listener, vision_msgs):
    """The CIFAR-10 classifier: vision_msgs/Classification with the top-k labels and scores of the
    ~/route JSON, in the same order, and the image's stamp and frame."""
    from vision_msgs.msg import Classification

    typed = Topic(listener.node, Classification, "/perception_node/classification")
    processes.start_spec(node_spec(""))
    listener.wait_for_backend("local", 30)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    stamp = (12, 0)
    publish_until(listener.node, image, "rgb8", stamp[0],
                  lambda: typed.stamped(stamp) and route_record(listener, stamp), "typed classification and ~/route")
    msg, record = typed.stamped(stamp), route_record(listener, stamp)

    assert (stamp_key(msg.header.stamp), msg.header.frame_id) == (stamp, FRAME_ID)
    assert len(msg.results) == len(record["top_k"]) >= 2
    assert [h.class_id for h in msg.results] == [label for label, _ in record["top_k"]]
    assert [h.score for h in msg.results] == pytest.approx([score for _, score in record["top_k"]], abs=1e-4)
    assert msg.results[0].class_id == record["label"]
    scores = [h.score for h in msg.results]
    assert scores == sorted(scores, reverse=True)


def test_without_vision_msgs_the_node_publishes_json(processes, listener, photo):  # noqa: F811
    """A ROS install without vision_msgs (hidden from the node's process): ~/detections is
    std_msgs/String JSON with the boxes and routing facts, and there is no ~/route."""
    from std_msgs.msg import String

    image, _ = photo
    strings = []
    listener.node.create_subscription(String, "/perception_node/detections",
                                      lambda m: strings.append(json.loads(m.data)), 100)
    node = processes.start_spec(node_spec("", local_model=str(ROBOT_DETECTOR), publish_annotated=False),
                                env=without_vision_msgs())
    listener.wait_for_backend("local", 30)
    record = publish_until(listener.node, image, "bgr8", 13,
                           lambda: next((r for r in strings if stamp_key(r["stamp"]) == (13, 0)), None),
                           "JSON detections")

    assert (record["backend"], record["frame_id"]) == ("local", FRAME_ID)
    expected = LocalBackend(ROBOT_DETECTOR).detect([image])[0]
    assert [d["label"] for d in record["detections"]] == [d.label for d in expected]
    np.testing.assert_allclose([d["box"] for d in record["detections"]],
                               [[d.x1, d.y1, d.x2, d.y2] for d in expected], atol=0.02)
    (publisher,) = listener.node.get_publishers_info_by_topic("/perception_node/detections")
    assert publisher.topic_type == "std_msgs/msg/String"
    assert listener.node.count_publishers("/perception_node/route") == 0
    assert node.poll() is None
