"""perception_node constructed in this process (local only, no subscribers): the inference thread
and the messages it publishes, driven through its own queue."""

from __future__ import annotations

import numpy as np
import pytest

from robot_compress.ros.image_conversion import image_to_array
from robot_compress.runtime.polling import wait_until
from tests.conftest import SMALL_MODEL
from tests.node.conftest import image_msg

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def node(ros_domain_id):
    import rclpy
    from rclpy.parameter import Parameter

    from robot_compress.ros.perception_node import PerceptionNode

    context = rclpy.Context()
    rclpy.init(context=context)
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("local_model", value=str(SMALL_MODEL)), Parameter("edge_url", value="")])
    yield node
    node.close()
    node.destroy_node()
    context.try_shutdown()


def good_frame(sec: int):
    return image_msg(sec, data=np.full((48, 64, 3), 128, np.uint8).tobytes())


def counters(node) -> dict[str, int]:
    with node._count_lock:
        return dict(node._counters)


def test_an_exception_in_one_frame_does_not_stop_the_inference_thread(node, monkeypatch):
    classify = node.router.classify
    stamps = []

    def flaky(batch, stamp=None):
        stamps.append(stamp.stamp.sec)
        if len(stamps) == 1:
            raise RuntimeError("router bug")
        return classify(batch, stamp)

    monkeypatch.setattr(node.router, "classify", flaky)
    node._enqueue(good_frame(1), image_to_array)
    wait_until(lambda: stamps, 10, "the first frame to reach the router")
    node._enqueue(good_frame(2), image_to_array)
    wait_until(lambda: counters(node)["frames_out"] == 1, 10, "the second frame's result",
               detail=lambda: counters(node))
    assert node._worker.is_alive() and stamps == [1, 2]
    assert counters(node)["frame_errors"] == 1


def test_diagnostics_say_error_once_the_inference_thread_has_ended(node):
    from diagnostic_msgs.msg import DiagnosticStatus

    assert node._diagnostics().status[0].level == DiagnosticStatus.OK
    node.queue.close()
    node._worker.join(5)
    status = node._diagnostics().status[0]
    assert status.level == DiagnosticStatus.ERROR and "thread stopped: inference" in status.message


def test_diagnostics_warn_while_frames_are_dropped_and_clear_once_the_node_keeps_up(node, monkeypatch):
    """A node slower than its camera (here: the router held) drops the oldest waiting frames; the
    next diagnostics report says so with WARN, and the one after it is OK again."""
    import threading

    from diagnostic_msgs.msg import DiagnosticStatus

    release, started = threading.Event(), []
    classify = node.router.classify

    def held(batch, stamp=None):
        started.append(stamp.stamp.sec)
        release.wait(10)
        return classify(batch, stamp)

    monkeypatch.setattr(node.router, "classify", held)
    node._diagnostics()  # a report before the burst: only drops after it count as recent
    node._enqueue(good_frame(1), image_to_array)
    wait_until(lambda: started, 10, "the first frame to reach the router")
    for sec in range(2, 2 + node.config.node.queue_size + 2):  # two more than the queue holds
        node._enqueue(good_frame(sec), image_to_array)
    behind = node._diagnostics().status[0]
    release.set()
    wait_until(lambda: counters(node)["frames_out"] == 1 + node.config.node.queue_size, 10,
               "the queued frames' results", detail=lambda: counters(node))
    caught_up = node._diagnostics().status[0]
    assert node.queue.dropped == 2
    assert behind.level == DiagnosticStatus.WARN and "2 frames dropped since the last report" in behind.message
    assert caught_up.level == DiagnosticStatus.OK
    assert {kv.key: kv.value for kv in caught_up.values}["frames_dropped"] == "2"


class Capture:
    def __init__(self):
        self.messages = []

    def publish(self, msg):
        self.messages.append(msg)


def test_route_record_carries_the_prediction(node):
    """With vision_msgs, ~/route holds the JSON result the recorder and demo read: it must have the label."""
    import json
    import time

    node.route_pub = Capture()  # here without vision_msgs the node has no ~/route: capture what it would send
    before = time.time()
    node._enqueue(good_frame(3), image_to_array)
    wait_until(lambda: node.route_pub.messages, 10, "a ~/route message")
    record = json.loads(node.route_pub.messages[0].data)
    assert record["stamp"]["sec"] == 3 and record["backend"] == "local"
    assert record["label"] in node.manifest.labels and len(record["top_k"]) == node.config.node.top_k
    assert before <= record["received_at"] <= record["answered_at"] <= time.time()  # the fault bounds' clock


def test_every_frame_is_accounted_for_at_shutdown(node, monkeypatch):
    """A burst faster than inference, with bad frames in it, then close() while frames are queued:
    every frame put is published, dropped, or counted as bad; none vanishes."""
    import time

    classify = node.router.classify

    def slow(batch, stamp=None):
        time.sleep(0.02)
        return classify(batch, stamp)

    monkeypatch.setattr(node.router, "classify", slow)
    for sec in range(40):
        frame = good_frame(sec) if sec % 10 else image_msg(sec, data=b"\x00" * 7)
        node._enqueue(frame, image_to_array)
        time.sleep(0.005)
    node.close()
    tally = node.tally()
    assert tally["frames_in"] == 40 and not node._worker.is_alive()
    assert tally["frames_out"] > 0 and tally["frames_dropped"] > 0 and tally["bad_input"] > 0
    assert tally["frames_in"] == sum(tally[key] for key in ("frames_out", "frames_dropped", "bad_input",
                                                             "frame_errors"))


def test_detector_draws_the_annotated_frame_only_while_someone_subscribes(ros_domain_id, monkeypatch):
    """No subscriber on ~/annotated: frames are answered and nothing is drawn; one subscriber: each
    frame is drawn once (the drawing and the 900 KB image message cost time on every frame)."""
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from robot_compress.ros import perception_node
    from tests.conftest import MODELS

    drawn = []
    draw = perception_node.draw_detections
    monkeypatch.setattr(perception_node, "draw_detections", lambda image, found: drawn.append(1) or draw(image, found))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = perception_node.PerceptionNode(context=context, parameter_overrides=[
        Parameter("local_model", value=str(MODELS / "robot_yolox_nano_320")), Parameter("edge_url", value="")])
    watcher = rclpy.create_node("annotated_watcher", context=context)
    try:
        frame = image_msg(1, encoding="bgr8", height=480, width=640,
                          data=np.full((480, 640, 3), 90, np.uint8).tobytes())
        node._enqueue(frame, image_to_array)
        wait_until(lambda: counters(node)["frames_out"] == 1, 20, "the first frame's result")
        assert drawn == []
        watcher.create_subscription(Image, "/perception_node/annotated", lambda m: None, qos_profile_sensor_data)
        wait_until(lambda: node.annotated_pub.get_subscription_count() == 1, 10, "the subscriber to be seen")
        node._enqueue(frame, image_to_array)
        wait_until(lambda: counters(node)["frames_out"] == 2, 20, "the second frame's result")
        assert drawn == [1]
    finally:
        watcher.destroy_node()
        node.close()
        node.destroy_node()
        context.try_shutdown()
