"""`robot-compress check-camera TOPIC`: is a camera topic delivered whole to a process on this machine?

Subscribes to TOPIC for a few seconds as perception_node does (sensor-data QoS, in its own process)
and prints the delivered rate, the frames estimated lost on the way (runtime/transport_loss.py),
the encoding and size of the frames, and each publisher's QoS. When more than 1% are lost, it
prints the recommended fix. Exit status: 0 fine, 1 loss above 1%, 2 no publisher or no frame.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

from robot_compress.runtime.transport_loss import LossSnapshot, TransportLossEstimator

IMAGE_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"}
LOSS_LIMIT = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", help="camera topic (sensor_msgs/Image or sensor_msgs/CompressedImage)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to listen (default 5)")
    parser.add_argument("--wait", type=float, default=10.0, help="how long to wait for a publisher (default 10 s)")
    parser.add_argument("--with-profile", action="store_true",
                        help="listen with robot_compress' Fast DDS profile (config/fastdds.xml), as "
                             "`ros2 launch robot_compress ...` runs the node; default: this shell's settings")


@dataclass
class Observation:
    """What one subscription saw: plain data, so the report can be built and tested without ROS."""

    topic: str
    msg_type: str
    publishers: list[dict[str, str]]
    arrivals: list[float] = field(default_factory=list)  # monotonic seconds
    sizes: list[int] = field(default_factory=list)  # bytes of image data per frame
    encoding: str = ""
    width: int | None = None
    height: int | None = None
    loss: LossSnapshot | None = None
    dds_profile: str = ""

    def rate_hz(self) -> float | None:
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return None
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])


def recommendation(obs: Observation, profile: str) -> str:
    where = "the same profile" if obs.dds_profile else f"FASTRTPS_DEFAULT_PROFILES_FILE={profile}"
    return (f"Fix: start the camera driver (and perception_node) with {where}, for example with "
            f"SetEnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE', '{profile}') in your own launch file; "
            f"with the camera on another host, subscribe to its image_transport JPEG topic "
            f"({obs.topic.rstrip('/')}/compressed) instead. See docs/DEPLOY.md.")


def report(obs: Observation, profile: str) -> tuple[str, int]:
    """The printed report and the exit status."""
    lines = [f"topic       {obs.topic} ({obs.msg_type or 'no publisher'})"]
    for pub in obs.publishers:
        # DDS discovery carries reliability and durability; history and depth stay the publisher's own
        history = f", {pub['history']} depth {pub['depth']}" if pub.get("history", "UNKNOWN") != "UNKNOWN" else ""
        lines.append(f"publisher   {pub['node']}: {pub['reliability']}, {pub['durability']}{history}")
    lines.append(f"this process {'DDS profile ' + obs.dds_profile if obs.dds_profile else 'Fast DDS defaults'}")
    if not obs.publishers:
        lines.append("no publisher on this topic (check the name and ROS_DOMAIN_ID)")
        return "\n".join(lines), 2
    if not obs.arrivals:
        lines.append("no frame arrived (QoS mismatch? a reliable subscriber cannot hear a best-effort publisher)")
        return "\n".join(lines), 2
    rate = obs.rate_hz()
    size = f"{obs.width}x{obs.height}" if obs.width is not None else "?"
    mean_kib = sum(obs.sizes) / len(obs.sizes) / 1024
    lines.append(f"frames      {len(obs.arrivals)} received, {f'{rate:.1f} Hz' if rate else 'rate ?'} delivered")
    lines.append(f"image       {obs.encoding or '?'}, {size}, {mean_kib:.0f} KiB per frame")
    loss = obs.loss
    status = 0
    if loss is None or not loss.method:
        lines.append("loss        unknown (frames carry neither stamps nor sequence numbers)")
    else:
        camera = f", camera period {1000 * loss.period_s:.1f} ms" if loss.period_s else ""
        lines.append(f"loss        {loss.missing} frames estimated lost ({100 * loss.loss_fraction:.1f}%, "
                     f"from {'sequence numbers' if loss.method == 'sequence' else 'stamps'}{camera})")
        if loss.loss_fraction > LOSS_LIMIT:
            lines.append(recommendation(obs, profile))
            status = 1
    return "\n".join(lines), status


def _publishers(node, topic: str) -> tuple[str, list[dict[str, str]]]:
    infos = node.get_publishers_info_by_topic(topic)
    msg_type = next((i.topic_type for i in infos if i.topic_type in IMAGE_TYPES), infos[0].topic_type if infos else "")
    pubs = [{"node": f"{i.node_namespace.rstrip('/')}/{i.node_name}", "reliability": i.qos_profile.reliability.name,
             "durability": i.qos_profile.durability.name, "history": i.qos_profile.history.name,
             "depth": str(i.qos_profile.depth)} for i in infos]
    return msg_type, pubs


def observe(topic: str, seconds: float, wait: float) -> Observation:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = rclpy.create_node("check_camera")
    try:
        topic = node.resolve_topic_name(topic)
        end = time.monotonic() + wait
        msg_type, pubs = _publishers(node, topic)
        while not pubs and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
            msg_type, pubs = _publishers(node, topic)
        obs = Observation(topic, msg_type, pubs, dds_profile=os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", ""))
        if msg_type not in IMAGE_TYPES:
            if pubs:
                raise SystemExit(f"check-camera: {topic} carries {msg_type}, not an image type ({sorted(IMAGE_TYPES)})")
            return obs
        estimator = TransportLossEstimator()
        last = []

        def on_frame(msg):
            last[:] = [msg]
            obs.arrivals.append(time.monotonic())
            obs.sizes.append(len(msg.data))
            if isinstance(msg, Image):
                obs.encoding, obs.width, obs.height = msg.encoding, msg.width, msg.height
            else:
                obs.encoding = msg.format
            estimator.observe(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg.header.frame_id)

        kind = Image if msg_type.endswith("/Image") else CompressedImage
        node.create_subscription(kind, topic, on_frame, qos_profile_sensor_data)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        if kind is CompressedImage and last:
            from robot_compress.runtime.errors import ImageError
            from robot_compress.runtime.preprocess import decode_image

            try:
                obs.height, obs.width = decode_image(bytes(last[0].data)).shape[:2]  # one frame, for its size
            except ImageError:
                obs.encoding += " (last frame does not decode)"
        obs.loss = estimator.snapshot()
        obs.publishers = _publishers(node, topic)[1] or pubs
        return obs
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def run(args: argparse.Namespace) -> int:
    from robot_compress.ros.launch_description import DDS_PROFILE

    if args.seconds <= 0 or args.wait < 0:
        print("check-camera: --seconds must be > 0 and --wait >= 0", file=sys.stderr)
        return 2
    if args.with_profile:
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)  # read when rclpy.init() starts DDS
    obs = observe(args.topic, args.seconds, args.wait)
    text, status = report(obs, str(DDS_PROFILE))
    print(text)
    return status
