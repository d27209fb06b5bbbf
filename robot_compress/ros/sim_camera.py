"""A simulated camera: frames from CIFAR-10 npz files, an image folder or a video at `rate_hz`.

Each frame is upscaled with INTER_NEAREST to a camera-like size (default 640x480), so the node's
INTER_AREA downscale to the model's input gives back the dataset's pixels exactly (when the size
is a whole multiple of it) and end-to-end accuracy matches the offline evaluation.

A COCO folder (`images/` + `instances.json`, e.g. coco/val_dev) is streamed for detection: each
photo is fitted into width x height keeping its aspect ratio (top-left, the rest black), and its
ground truth carries `image_id` and `scale` (frame pixels per photo pixel), so a listener maps the
published boxes back to the annotation's pixels.

Ground truth: for every image published on `image` (or JPEG on `image/compressed` with
`compressed:=true`), a `std_msgs/String` on `~/ground_truth` (reliable) holds JSON
`{"stamp": {"sec", "nanosec"}, "index", "class_id", "label"}` with the image's header stamp,
so a listener joins results to truth by stamp. header.frame_id is `camera#<n>`, n counting the published
frames from 0, so a subscriber can count frames lost on the way (`sequence_in_frame_id:=false` for plain
`camera`). Video frames have class_id -1 and label "".
The node exits by itself after `count` frames (0 = the source once, or forever with `loop`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import ConfigDict, field_validator
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from robot_compress.ros.image_conversion import array_to_image
from robot_compress.ros.parameters import declare
from robot_compress.ros.run_node import run_node, spin_until_done
from robot_compress.runtime.datasets import load_labelled_images
from robot_compress.runtime.schema import Schema, setting, validate
from robot_compress.runtime.transport_loss import with_sequence

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def labelled_frames(source: str, limit: int, loop: bool) -> Iterator[tuple[int, np.ndarray, int, str]]:
    """(index, RGB HxWx3 uint8, class_id, label) from a dataset or video, `limit` frames at most."""
    path = Path(source)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames = _video_frames(path)
    else:
        data = load_labelled_images(path, split="test")

        def once():
            return ((img, int(y), data.label_names[int(y)]) for img, y in zip(data.images, data.labels, strict=True))

        frames = _cycle(once) if loop else once()
    for index, (image, class_id, label) in enumerate(frames):
        if limit and index >= limit:
            return
        yield index, image, class_id, label


def is_coco_folder(source: str) -> bool:
    return (Path(source) / "instances.json").is_file() and (Path(source) / "images").is_dir()


def coco_frames(source: str, limit: int, loop: bool) -> Iterator[tuple[int, np.ndarray, int]]:
    """(index, RGB HxWx3 uint8, COCO image id) of a COCO folder's images, in instances.json order."""
    folder = Path(source)
    entries = json.loads((folder / "instances.json").read_text())["images"]

    def once():
        for entry in entries:
            bgr = cv2.imread(str(folder / "images" / entry["file_name"]))
            if bgr is None:
                raise FileNotFoundError(f"{folder / 'images' / entry['file_name']} is missing or not an image")
            yield bgr[:, :, ::-1], int(entry["id"])

    for index, (image, image_id) in enumerate(_cycle(once) if loop else once()):
        if limit and index >= limit:
            return
        yield index, image, image_id


def fit_into(rgb: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """`rgb` resized keeping its aspect ratio into the top-left of a black width x height frame,
    and the scale (frame pixels per image pixel)."""
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    w, h = round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:h, :w] = rgb if (w, h) == rgb.shape[1::-1] else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return frame, scale


def _cycle(make):
    while True:
        yield from make()


def _video_frames(path: Path):
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield bgr[:, :, ::-1], -1, ""
    finally:
        capture.release()


class CameraConfig(Schema):
    """sim_camera's parameters (declared as read-only ROS parameters from these fields)."""

    model_config = ConfigDict(validate_default=True)  # so the empty default source is refused

    source: str = setting("", "CIFAR-10 .npz file, image folder (<class>/<image>), COCO folder (images/ + "
                          "instances.json: photos fitted keeping their aspect ratio) or video file")
    rate_hz: float = setting(10.0, "frames per second", 0.1, 1000.0)
    width: int = setting(640, "published image width (INTER_NEAREST upscale)", 1, 8192)
    height: int = setting(480, "published image height", 1, 8192)
    encoding: Literal["rgb8", "bgr8"] = setting("rgb8", "image encoding (ignored with compressed)")
    compressed: bool = setting(False, "publish JPEG sensor_msgs/CompressedImage on image/compressed instead")
    count: int = setting(0, "frames to publish, then exit (0 = the source once, or forever with loop)", 0, 10**9)
    loop: bool = setting(False, "start the dataset again at its end")
    wait_for_subscribers: int = setting(0, "wait until this many subscribers see the image topic before "
                                        "publishing", 0, 100)
    wait_for_truth_subscribers: int = setting(0, "also wait until this many subscribers see ~/ground_truth", 0, 100)
    settle_s: float = setting(0.5, "after the subscribers appear, wait this long: DDS matches a publisher to a "
                              "new subscriber before the subscriber matches back, and best-effort frames sent in "
                              "between are lost", 0.0, 60.0)
    frame_id: str = setting("camera", "header.frame_id of the images")
    sequence_in_frame_id: bool = setting(True, "append '#<frame number>' to frame_id, so subscribers can count "
                                         "lost frames exactly (perception_node does)")

    @field_validator("source")
    @classmethod
    def _required(cls, value: str) -> str:
        if not value:
            raise ValueError("must be given (a CIFAR-10 .npz, an image folder or a video file)")
        return value


class SimCamera(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_camera", **kwargs)
        p = validate(CameraConfig, declare(self, CameraConfig.model_fields), "parameters").model_dump()
        self.p = p
        self.coco = is_coco_folder(p["source"])
        self.frames = (coco_frames if self.coco else labelled_frames)(p["source"], p["count"], p["loop"])
        if p["compressed"]:
            self.image_pub = self.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
        else:
            self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.truth_pub = self.create_publisher(String, "~/ground_truth", 1000)
        self.published = 0
        self.done = False
        self._start_at: float | None = None
        self.timer = self.create_timer(1.0 / p["rate_hz"], self._tick)

    def _tick(self) -> None:
        if self._start_at is None:
            waiting = (self.image_pub.get_subscription_count() < self.p["wait_for_subscribers"]
                       or self.truth_pub.get_subscription_count() < self.p["wait_for_truth_subscribers"])
            if waiting:
                return
            waited = self.p["wait_for_subscribers"] or self.p["wait_for_truth_subscribers"]
            self._start_at = time.monotonic() + (self.p["settle_s"] if waited else 0.0)
        if time.monotonic() < self._start_at:
            return
        item = next(self.frames, None)
        if item is None:
            self.done = True
            return
        if self.coco:
            index, rgb, image_id = item
            frame, scale = fit_into(rgb, self.p["width"], self.p["height"])
            truth = {"index": index, "class_id": -1, "label": "", "image_id": image_id, "scale": scale}
        else:
            index, rgb, class_id, label = item
            frame = cv2.resize(rgb, (self.p["width"], self.p["height"]), interpolation=cv2.INTER_NEAREST)
            truth = {"index": index, "class_id": class_id, "label": label}
        stamp = self.get_clock().now().to_msg()
        msg = self._to_message(frame)
        frame_id = self.p["frame_id"]
        msg.header.stamp = stamp
        msg.header.frame_id = with_sequence(frame_id, self.published) if self.p["sequence_in_frame_id"] else frame_id
        self.image_pub.publish(msg)
        self.truth_pub.publish(String(data=json.dumps(
            {"stamp": {"sec": stamp.sec, "nanosec": stamp.nanosec}, **truth})))
        self.published += 1

    def _to_message(self, rgb: np.ndarray):
        if self.p["compressed"]:
            ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            msg = CompressedImage(format="jpeg")
            msg.data = jpeg.tobytes()
            return msg
        pixels = rgb if self.p["encoding"] == "rgb8" else rgb[:, :, ::-1]
        return array_to_image(pixels, self.p["encoding"], Image())


def main(args: list[str] | None = None) -> int:
    return run_node(SimCamera, "sim_camera", (ValueError, FileNotFoundError), args, spin=spin_until_done)


if __name__ == "__main__":
    sys.exit(main())
