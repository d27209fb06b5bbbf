"""`sim_world` in its own process, watched by a real rclpy subscriber in the test process."""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import pytest

from robot_compress.runtime.polling import wait_until
from tests.conftest import rerun_after_a_stall
from tests.node.conftest import processes, vision_msgs, without_vision_msgs  # noqa: F401  (fixtures)

WIDTH, HEIGHT, RATE_HZ = 320, 240, 15.0


class WorldListener:
    """Records images, camera_info, ground truth and odometry; publishes cmd_vel. `typed`: sim_world has
    vision_msgs, so its truth is a Detection2DArray on /sim/ground_truth and JSON on /sim/ground_truth_json."""

    def __init__(self, typed: bool):
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        from robot_compress.ros.result_recorder import BackgroundNode

        self.Twist = Twist
        self.typed = typed
        self._ros = BackgroundNode("sim_world_listener")
        self.node = self._ros.node
        self.lock = threading.Lock()
        self.images: list[tuple[float, int, int, str]] = []  # (arrival, width, height, encoding)
        self.infos: list = []
        self.truth: list[dict] = []
        self.typed_truth: list = []  # vision_msgs/Detection2DArray, when `typed`
        self.odom: list[tuple[float, float, float, float]] = []  # (arrival, x, y, yaw)
        self.node.create_subscription(Image, "/camera/image_raw", self._on_image, qos_profile_sensor_data)
        self.node.create_subscription(CameraInfo, "/camera/camera_info", self._on_info, qos_profile_sensor_data)
        self.node.create_subscription(String, "/sim/ground_truth_json" if typed else "/sim/ground_truth",
                                      self._on_truth, 100)
        if typed:
            from vision_msgs.msg import Detection2DArray

            self.node.create_subscription(Detection2DArray, "/sim/ground_truth", self._on_typed_truth, 100)
        self.node.create_subscription(Odometry, "/odom", self._on_odom, 50)
        self.cmd_pub = self.node.create_publisher(Twist, "/cmd_vel", 10)
        self._ros.start()

    def _on_image(self, msg):
        with self.lock:
            self.images.append((time.monotonic(), msg.width, msg.height, msg.encoding, len(msg.data)))

    def _on_info(self, msg):
        with self.lock:
            self.infos.append(msg)

    def _on_truth(self, msg):
        with self.lock:
            self.truth.append(json.loads(msg.data))

    def _on_typed_truth(self, msg):
        with self.lock:
            self.typed_truth.append(msg)

    def _on_odom(self, msg):
        q = msg.pose.pose.orientation
        with self.lock:
            self.odom.append((time.monotonic(), msg.pose.pose.position.x, msg.pose.pose.position.y,
                              2 * math.atan2(q.z, q.w)))

    def snapshot(self, name: str) -> list:
        with self.lock:
            return list(getattr(self, name))

    def send(self, linear: float, angular: float) -> None:
        msg = self.Twist()
        msg.linear.x, msg.angular.z = linear, angular
        self.cmd_pub.publish(msg)

    def close(self):
        self._ros.close()


@pytest.fixture
def listener(ros_domain_id, request):
    """Typed where this process has vision_msgs; `indirect` parametrization picks the mode (True: typed,
    which needs vision_msgs here; False: JSON, sim_world started without vision_msgs)."""
    from robot_compress.ros.messages import HAVE_VISION_MSGS

    typed = getattr(request, "param", HAVE_VISION_MSGS)
    if typed:
        request.getfixturevalue("vision_msgs")
    watcher = WorldListener(typed)
    yield watcher
    watcher.close()


def _start_sim_world(processes, typed: bool = True, **parameters):  # noqa: F811
    """`typed=False`: as on a ROS install without vision_msgs (the JSON ground truth only)."""
    args = [sys.executable, "-m", "robot_compress.ros.sim_world", "--ros-args"]
    for key, value in {"width": WIDTH, "height": HEIGHT, "rate_hz": RATE_HZ, **parameters}.items():
        args += ["-p", f"{key}:={value}"]
    return processes.start("sim_world", args, env=None if typed else without_vision_msgs())


def assert_typed_truth_matches_json(listener) -> int:
    """Each Detection2DArray has the image's stamp and frame and the JSON's boxes (centre and size
    in pixels, the COCO label as class_id, score 1, <board>/<image_id> as id); how many boxes."""
    by_stamp = {(t["stamp"]["sec"], t["stamp"]["nanosec"]): t for t in listener.snapshot("truth")}
    typed = listener.snapshot("typed_truth")
    assert len(typed) >= 5
    compared = 0
    for msg in typed:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if stamp not in by_stamp:
            continue
        truth = by_stamp[stamp]
        assert msg.header.frame_id == truth["frame_id"] == "camera_rgb_optical_frame"
        assert len(msg.detections) == len(truth["boxes"])
        for detection, box in zip(msg.detections, truth["boxes"], strict=True):
            x0, y0, x1, y1 = box["bbox"]  # rounded to 0.01 px in the JSON
            (hypothesis,) = detection.results
            assert (hypothesis.hypothesis.class_id, hypothesis.hypothesis.score) == (box["label"], 1.0)
            assert detection.id == f"{box['board']}/{box['image_id']}"
            assert (detection.header.stamp.sec, detection.header.frame_id) == (stamp[0], msg.header.frame_id)
            assert (detection.bbox.center.position.x, detection.bbox.center.position.y,
                    detection.bbox.size_x, detection.bbox.size_y) == pytest.approx(
                ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), abs=0.011)
            compared += 1
    return compared


@rerun_after_a_stall
def test_sim_world_publishes_at_rate_with_consistent_truth_and_follows_cmd_vel(processes, listener):  # noqa: F811
    child = _start_sim_world(processes)
    wait_until(lambda: len(listener.snapshot("images")) >= 5, 60, "the first images",
               detail=lambda: processes.output(child))
    start = time.monotonic()
    time.sleep(10.0)
    end = time.monotonic()
    images = [i for i in listener.snapshot("images") if start <= i[0] < end]
    assert abs(len(images) / (end - start) - RATE_HZ) <= 0.1 * RATE_HZ, (len(images), processes.output(child))
    assert {(w, h, enc, size) for _, w, h, enc, size in images} == {(WIDTH, HEIGHT, "rgb8", WIDTH * HEIGHT * 3)}

    info = listener.snapshot("infos")[-1]
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    fx, cx, fy, cy = info.k[0], info.k[2], info.k[4], info.k[5]
    assert fx == pytest.approx(fy) and (cx, cy) == (WIDTH / 2 - 0.5, HEIGHT / 2 - 0.5)
    assert math.degrees(2 * math.atan(WIDTH / 2 / fx)) == pytest.approx(62.0, abs=0.01)

    truth = listener.snapshot("truth")
    boxes = [b for t in truth for b in t["boxes"]]
    assert len(boxes) > 20, truth[-3:]  # the patrol passes boards
    for box in boxes:
        x0, y0, x1, y1 = box["bbox"]
        assert 0 <= x0 < x1 <= WIDTH and 0 <= y0 < y1 <= HEIGHT, box
    # Boxes move as the robot moves: one image's labelled box is elsewhere a second later.
    by_key = {}
    for t in truth:
        for b in t["boxes"]:
            by_key.setdefault((b["board"], b["label"]), []).append(
                (t["sim_time_s"], b["bbox"]))
    moved = [k for k, seen in by_key.items() if len(seen) > 5 and seen[0][1] != seen[-1][1]]
    assert moved, by_key
    if listener.typed:
        assert assert_typed_truth_matches_json(listener) > 20

    # Patrol: the robot has moved along its circle by now.
    odom = listener.snapshot("odom")
    assert math.hypot(odom[-1][1] - odom[0][1], odom[-1][2] - odom[0][2]) > 0.5

    # cmd_vel: turn on the spot; a bad command in between is refused with a warning, not a crash.
    sent_at = time.monotonic()
    while time.monotonic() - sent_at < 3.0:
        listener.send(0.0, 1.0)
        if time.monotonic() - sent_at > 1.0:
            listener.send(float("nan"), 0.0)
        time.sleep(0.1)
    turning = [o for o in listener.snapshot("odom") if sent_at + 1.0 <= o[0] <= sent_at + 3.0]
    assert len(turning) > 15
    distance = math.hypot(turning[-1][1] - turning[0][1], turning[-1][2] - turning[0][2])
    turned = math.atan2(math.sin(turning[-1][3] - turning[0][3]), math.cos(turning[-1][3] - turning[0][3]))
    assert distance < 0.05 and turned > 0.8, (distance, turned)
    assert child.poll() is None
    assert "cmd_vel ignored: linear.x is nan" in processes.output(child)


def test_sim_world_names_a_missing_asset_folder(processes, tmp_path, ros_domain_id):  # noqa: F811
    child = _start_sim_world(processes, assets=str(tmp_path))
    assert child.wait(60) == 2
    assert "turtlebot3_waffle_pi.urdf is missing" in processes.output(child)


@pytest.mark.parametrize("listener", [True, False], ids=["typed", "json"], indirect=True)
def test_sim_world_cifar10_mode_labels_each_frame(processes, listener, shared_data):  # noqa: F811
    """The picture's label is in the JSON ground truth, on its own topic when the truth is typed."""
    from robot_compress.runtime.datasets import load_cifar10_npz

    child = _start_sim_world(processes, listener.typed, mode="cifar10", hold_frames=2, rate_hz=10.0)
    wait_until(lambda: len(listener.snapshot("truth")) >= 12, 60, "ground truth of 12 frames",
               detail=lambda: processes.output(child))
    truth = listener.snapshot("truth")
    labels = load_cifar10_npz(shared_data / "cifar10" / "test_dev.npz")
    for t in truth[:12]:
        expected = int(labels.labels[(t["index"] // 2) % len(labels.labels)])
        assert (t["class_id"], t["label"]) == (expected, labels.label_names[expected]), t
    if listener.typed:
        wait_until(lambda: len(listener.snapshot("typed_truth")) >= 5, 10, "typed ground truth")
        assert_typed_truth_matches_json(listener)
    else:
        assert "ground truth as JSON" in processes.output(child)


@pytest.mark.parametrize("parameter, message", [
    ("rate_hz:=15", "parameter 'rate_hz' rejected"),
    ("width:=5", "parameter 'width' rejected"),
    ("mode:=kitti", "field 'mode' must be one of ['coco', 'cifar10'], got 'kitti'"),
    ("widht:=320", "unknown parameter(s) ['widht']"),
])
def test_sim_world_names_a_bad_parameter(parameter, message, ros_domain_id):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "robot_compress.ros.sim_world", "--ros-args", "-p", parameter],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
