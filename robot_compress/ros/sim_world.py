"""`sim_world`: the MuJoCo TurtleBot3 simulation as a ROS 2 node (a thin shell over robot_compress.sim).

Publishes `camera/image_raw` (rgb8) and `camera/camera_info` at `rate_hz`, the frame's ground truth on
`sim/ground_truth` (vision_msgs/Detection2DArray where installed, else std_msgs/String JSON with the
image's stamp; with vision_msgs the JSON goes to `sim/ground_truth_json`), `odom` (nav_msgs/Odometry) and, where tf2_msgs is installed, TF odom -> base_footprint.
Follows `cmd_vel` (geometry_msgs/Twist); without a command for `cmd_timeout_s` it drives the scripted
patrol past the picture boards. Simulated time advances by 1/rate_hz per published frame.
With `mode:=cifar10` the robot stands before one board that fills most of the view and shows the
dataset's pictures in turn; the ground truth JSON then carries the picture's `class_id` and `label`
(as sim_camera's does), so the perception stack's classification can be scored against it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from robot_compress.ros.image_conversion import array_to_image
from robot_compress.ros.messages import HAVE_VISION_MSGS, WORLD_TRUTH_JSON_TOPIC, WORLD_TRUTH_TOPIC
from robot_compress.ros.parameters import declare
from robot_compress.ros.run_node import run_node, spin_until_done
from robot_compress.runtime.schema import Schema, setting, validate
from robot_compress.sim.assets import AssetError
from robot_compress.sim.boards import load_cifar_pictures, load_coco_pictures
from robot_compress.sim.rendering import RenderingUnavailable
from robot_compress.sim.scene import SceneSpec, board_filling_view, ring_of_boards
from robot_compress.sim.simulation import DEFAULT_PICTURES, Frame, Simulation, write_snapshot

if HAVE_VISION_MSGS:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
try:
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

DEFAULT_CIFAR = DEFAULT_PICTURES.parents[1] / "cifar10" / "test_dev.npz"


class WorldConfig(Schema):
    """sim_world's parameters (declared as read-only ROS parameters from these fields)."""

    mode: Literal["coco", "cifar10"] = setting(
        "coco", "coco: picture boards with COCO boxes around a patrol; cifar10: one board filling the view, "
        "its picture's label as ground truth")
    width: int = setting(320, "camera image width in pixels", 16, 4096)
    height: int = setting(240, "camera image height in pixels", 16, 4096)
    rate_hz: float = setting(15.0, "camera frames per second (simulated time advances 1/rate_hz per frame)",
                             0.1, 120.0)
    hfov_deg: float = setting(62.0, "horizontal field of view (Raspberry Pi Camera v2: about 62 degrees)",
                              10.0, 170.0)
    assets: str = setting("", "folder with turtlebot3_description/ and turtlebot3_world/ "
                          "(empty: ../shared/assets/turtlebot3)")
    pictures: str = setting("", "coco: COCO folder (images/ + instances.json) or image folder (empty: coco "
                            "val_dev); cifar10: CIFAR-10 .npz or ImageFolder tree (empty: cifar10 test_dev.npz)")
    hold_frames: int = setting(1, "cifar10: frames each picture stays on the board before the next", 1, 100000)
    boards: int = setting(6, "number of picture boards around the patrol circle", 1, 32)
    occlusion: bool = setting(True, "render a segmentation pass to drop or trim hidden ground-truth boxes")
    min_visible: float = setting(0.3, "drop a box when less than this fraction of it shows", 0.0, 1.0)
    cmd_timeout_s: float = setting(1.0, "without a cmd_vel for this long, drive the scripted patrol", 0.0, 3600.0)
    patrol: bool = setting(True, "drive the scripted patrol when no cmd_vel arrives (false: stand still)")
    count: int = setting(0, "frames to publish, then exit (0: run until stopped)", 0, 10**9)
    wait_for_subscribers: int = setting(0, "wait until this many subscribers see the image topic before the "
                                        "first frame", 0, 100)
    settle_s: float = setting(0.5, "after the subscribers appear, wait this long (DDS matches both ways before "
                              "frames arrive)", 0.0, 60.0)
    snapshot_dir: str = setting("", "write every snapshot_every-th frame, ground truth drawn on it, as "
                                "<sec>_<nanosec>.png here (empty: none)")
    snapshot_every: int = setting(30, "frames between snapshots", 1, 10**6)
    frame_id: str = setting("camera_rgb_optical_frame", "header.frame_id of images and ground truth")
    odom_frame: str = setting("odom", "odometry frame")
    base_frame: str = setting("base_footprint", "robot base frame")


class SimWorld(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_world", **kwargs)
        p = validate(WorldConfig, declare(self, WorldConfig.model_fields), "parameters").model_dump()
        self.p = p
        spec = SceneSpec(width=p["width"], height=p["height"], hfov_deg=p["hfov_deg"], assets=p["assets"] or None)
        if p["mode"] == "cifar10":
            self.pictures = load_cifar_pictures(p["pictures"] or DEFAULT_CIFAR)
            boards = [board_filling_view(self.pictures[0], spec)]
        else:
            self.pictures = []
            boards = ring_of_boards(load_coco_pictures(p["pictures"] or DEFAULT_PICTURES, p["boards"]))
        self.sim = Simulation(spec, boards, occlusion=p["occlusion"], min_visible=p["min_visible"])
        self.image_pub = self.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", qos_profile_sensor_data)
        self.truth_pub = self.create_publisher(Detection2DArray, WORLD_TRUTH_TOPIC, 100) if HAVE_VISION_MSGS else None
        self.truth_json_pub = self.create_publisher(String, WORLD_TRUTH_JSON_TOPIC, 100)
        self.odom_pub = self.create_publisher(Odometry, "odom", 50)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 100) if TFMessage is not None else None
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, 10)
        self.last_command_at = -math.inf
        self.published = 0
        self.done = False
        self._start_at: float | None = None
        self.timer = self.create_timer(1.0 / p["rate_hz"], self._tick)
        truth = (f"vision_msgs/Detection2DArray, JSON on {WORLD_TRUTH_JSON_TOPIC}" if HAVE_VISION_MSGS
                 else "JSON")
        self.get_logger().info(f"sim_world: {p['width']}x{p['height']} at {p['rate_hz']:g} Hz, {len(self.sim.boards)} "
                               f"boards, ground truth as {truth}")

    def _on_cmd_vel(self, msg: Twist) -> None:
        try:
            self.sim.set_command(msg.linear.x, msg.angular.z)
        except ValueError as exc:
            self.get_logger().warning(f"cmd_vel ignored: {exc}", throttle_duration_sec=2.0)
            return
        self.last_command_at = time.monotonic()

    def _ready(self) -> bool:
        """Whether to publish now: after `wait_for_subscribers` subscribers and `settle_s`, until `count`."""
        if self.p["count"] and self.published >= self.p["count"]:
            self.done = True
            return False
        if self._start_at is None:
            if self.image_pub.get_subscription_count() < self.p["wait_for_subscribers"]:
                return False
            self._start_at = time.monotonic() + (self.p["settle_s"] if self.p["wait_for_subscribers"] else 0.0)
        return time.monotonic() >= self._start_at

    def _tick(self) -> None:
        if not self._ready():
            return
        if self.pictures and self.published and self.published % self.p["hold_frames"] == 0:
            index = (self.published // self.p["hold_frames"]) % len(self.pictures)
            self.sim.set_picture("board_0", self.pictures[index])
        if time.monotonic() - self.last_command_at > self.p["cmd_timeout_s"]:
            if self.p["patrol"] and not self.pictures:
                self.sim.patrol()
            else:
                self.sim.set_command(0.0, 0.0)
        self.sim.advance(1.0 / self.p["rate_hz"])
        frame = self.sim.render()
        stamp = self.get_clock().now().to_msg()
        image = array_to_image(frame.rgb, "rgb8", Image())
        image.header.stamp, image.header.frame_id = stamp, self.p["frame_id"]
        self.image_pub.publish(image)
        self.info_pub.publish(self._camera_info(stamp))
        self.truth_json_pub.publish(self._truth_json(frame, stamp))
        if self.truth_pub is not None:
            self.truth_pub.publish(self._truth(frame, stamp))
        self._publish_odometry(frame, stamp)
        if self.p["snapshot_dir"] and self.published % self.p["snapshot_every"] == 0:
            write_snapshot(Path(self.p["snapshot_dir"]) / f"{stamp.sec}_{stamp.nanosec:09d}.png", frame)
        self.published += 1

    def _camera_info(self, stamp) -> CameraInfo:
        fx, fy, cx, cy = self.sim.intrinsics()
        info = CameraInfo(width=self.p["width"], height=self.p["height"], distortion_model="plumb_bob")
        info.header.stamp, info.header.frame_id = stamp, self.p["frame_id"]
        info.d = [0.0] * 5
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _truth_json(self, frame: Frame, stamp) -> String:
        pose = frame.pose
        return String(data=json.dumps({
            "stamp": {"sec": stamp.sec, "nanosec": stamp.nanosec}, "frame_id": self.p["frame_id"],
            "width": self.p["width"], "height": self.p["height"], "sim_time_s": round(frame.time_s, 4),
            "pose": {"x": pose.x, "y": pose.y, "yaw": pose.yaw}, "index": self.published,
            "class_id": frame.class_id, "label": frame.label,
            "boxes": [box.as_dict() for box in frame.boxes]}))

    def _truth(self, frame: Frame, stamp):
        """The boxes as vision_msgs/Detection2DArray: centre and size in pixels, the COCO label as
        class_id with score 1, `<board>/<image_id>` as id."""
        array = Detection2DArray()
        array.header.stamp, array.header.frame_id = stamp, self.p["frame_id"]
        for box in frame.boxes:
            detection = Detection2D()
            detection.header = array.header
            detection.id = f"{box.board}/{box.image_id}"
            detection.bbox.center.position.x = (box.x0 + box.x1) / 2
            detection.bbox.center.position.y = (box.y0 + box.y1) / 2
            detection.bbox.size_x, detection.bbox.size_y = box.x1 - box.x0, box.y1 - box.y0
            hypothesis = ObjectHypothesisWithPose()
            hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = box.label, 1.0
            detection.results.append(hypothesis)
            array.detections.append(detection)
        return array

    def _publish_odometry(self, frame: Frame, stamp) -> None:
        pose = frame.pose
        odom = Odometry()
        odom.header.stamp, odom.header.frame_id = stamp, self.p["odom_frame"]
        odom.child_frame_id = self.p["base_frame"]
        odom.pose.pose.position.x, odom.pose.pose.position.y = pose.x, pose.y
        odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = math.sin(pose.yaw / 2), math.cos(pose.yaw / 2)
        odom.twist.twist.linear.x, odom.twist.twist.angular.z = pose.linear, pose.angular
        self.odom_pub.publish(odom)
        if self.tf_pub is not None:
            transform = TransformStamped()
            transform.header = odom.header
            transform.child_frame_id = odom.child_frame_id
            transform.transform.translation.x, transform.transform.translation.y = pose.x, pose.y
            transform.transform.rotation = odom.pose.pose.orientation
            self.tf_pub.publish(TFMessage(transforms=[transform]))

    def destroy_node(self):
        self.sim.close()
        return super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SimWorld, "sim_world", (ValueError, AssetError, RenderingUnavailable), args,
                    spin=spin_until_done)


if __name__ == "__main__":
    sys.exit(main())
