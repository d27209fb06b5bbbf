"""Record what the perception stack publishes: one set of subscriptions for the fault recorder
process, the benchmarks and the tests.

`subscribe` hands every message to `sink(kind, fields)` as plain data, in the receiving thread:
  result       the node's result JSON (~/classification or ~/detections, or ~/route where vision_msgs
               types those)
  truth        sim_camera's ~/ground_truth JSON (or sim_world's, from `truth_topic`)
  image        {"stamp": {...}} of every image on `image_topic` (only when one is given)
  backend      {"backend": "edge"|"local"} (latched)
  event        the node's ~/events JSON: {"t": <when the router changed state>, "previous", "state", ...}
  diagnostics  {"name": ..., "values": {...}} of the node's statuses on /diagnostics
`BackgroundNode` spins a node on its own context in a thread, for a process that does other work.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from robot_compress.ros.messages import DETECTION_JSON_TOPIC, RESULT_JSON_TOPIC

Sink = Callable[[str, dict], None]

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
EVENTS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def subscribe(node, sink: Sink, perception_node: str = "perception_node", camera: str = "sim_camera",
              image_topic: str | None = None, truth_topic: str | None = None) -> None:
    """Subscribe `node` to the perception stack's outputs; each message goes to `sink`. The ground
    truth JSON is read from `truth_topic` (default: sim_camera's `/<camera>/ground_truth`)."""

    def json_to(kind: str) -> Callable:
        return lambda msg: sink(kind, json.loads(msg.data))

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name.startswith(perception_node):
                level = ord(status.level) if isinstance(status.level, bytes) else status.level  # a byte field
                sink("diagnostics", {"name": status.name, "level": level, "message": status.message,
                                     "values": {kv.key: kv.value for kv in status.values}})

    for topic in dict.fromkeys((RESULT_JSON_TOPIC, DETECTION_JSON_TOPIC)):  # classifier's and detector's
        node.create_subscription(String, f"/{perception_node}/{topic}", json_to("result"), RELIABLE)
    node.create_subscription(String, truth_topic or f"/{camera}/ground_truth", json_to("truth"), RELIABLE)
    node.create_subscription(String, f"/{perception_node}/backend", lambda m: sink("backend", {"backend": m.data}),
                             LATCHED)
    node.create_subscription(String, f"/{perception_node}/events", json_to("event"), EVENTS)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    if image_topic is not None:
        node.create_subscription(Image, image_topic, lambda m: sink("image", {"stamp": {
            "sec": m.header.stamp.sec, "nanosec": m.header.stamp.nanosec}}), qos_profile_sensor_data)


class BackgroundNode:
    """An rclpy node on its own context, spun in a daemon thread until `close()`."""

    def __init__(self, name: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = False
        self._thread = threading.Thread(target=self._spin, name=f"{name}-spin", daemon=True)

    def start(self) -> BackgroundNode:
        """Start spinning (once the subscriptions are made)."""
        self._running = True
        self._thread.start()
        return self

    def _spin(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(2)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
