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
from tests.node.conftest import processes  # noqa: F401  (fixture)

WIDTH, HEIGHT, RATE_HZ = 320, 240, 15.0


class WorldListener:
    """Records images, camera_info, ground truth and odometry; publishes cmd_vel."""

    def __init__(self):
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        from robot_compress.ros.result_recorder import BackgroundNode

        self.Twist = Twist
        self._ros = BackgroundNode("sim_world_listener")
        self.node = self._ros.node
        self.lock = threading.Lock()
        self.images: list[tuple[float, int, int, str]] = []  # (arrival, width, height, encoding)
        self.infos: list = []
        self.truth: list[dict] = []
        self.odom: list[tuple[float, float, float, float]] = []  # (arrival, x, y, yaw)
        self.node.create_subscription(Image, "/camera/image_raw", self._on_image, qos_profile_sensor_data)
        self.node.create_subscription(CameraInfo, "/camera/camera_info", self._on_info, qos_profile_sensor_data)
        self.node.create_subscription(String, "/sim/ground_truth", self._on_truth, 100)
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
def listener(ros_domain_id):
    watcher = WorldListener()
    yield watcher
    watcher.close()


def _start_sim_world(processes, **parameters):  # noqa: F811
    args = [sys.executable, "-m", "robot_compress.ros.sim_world", "--ros-args"]
    for key, value in {"width": WIDTH, "height": HEIGHT, "rate_hz": RATE_HZ, **parameters}.items():
        args += ["-p", f"{key}:={value}"]
    return processes.start("sim_world", args)


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


def test_sim_world_cifar10_mode_labels_each_frame(processes, listener, shared_data):  # noqa: F811
    from robot_compress.runtime.datasets import load_cifar10_npz

    child = _start_sim_world(processes, mode="cifar10", hold_frames=2, rate_hz=10.0)
    wait_until(lambda: len(listener.snapshot("truth")) >= 12, 60, "ground truth of 12 frames",
               detail=lambda: processes.output(child))
    truth = listener.snapshot("truth")
    labels = load_cifar10_npz(shared_data / "cifar10" / "test_dev.npz")
    for t in truth[:12]:
        expected = int(labels.labels[(t["index"] // 2) % len(labels.labels)])
        assert (t["class_id"], t["label"]) == (expected, labels.label_names[expected]), t


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
