"""Record what the robot side says during a fault run, as JSON lines with the receive time.

Runs as its own process next to perception_node and sim_camera (inside the robot namespace:
DDS does not cross namespaces). rclpy is imported in `main` only, so the rest of
robot_compress.faults stays importable without ROS. Each line is one of
  {"kind": "result", "t": ..., **the node's result JSON (~/classification, or ~/route where
                                 vision_msgs is installed and ~/classification is typed)}
  {"kind": "truth", "t": ..., **sim_camera's ~/ground_truth JSON}
  {"kind": "image", "t": ..., "stamp": {...}}             (every image sim_camera published)
  {"kind": "backend", "t": ..., "backend": "edge"|"local"}
  {"kind": "event", "t": <when the router changed state>, "previous", "state", "reason", "detail"}
  {"kind": "diagnostics", "t": ..., "values": {...}}
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON-lines file to write")
    parser.add_argument("--node", default="perception_node")
    parser.add_argument("--camera", default="sim_camera")
    args = parser.parse_args(argv)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from robot_compress.ros.messages import RESULT_JSON_TOPIC

    rclpy.init()
    node = rclpy.create_node("fault_recorder")
    out = open(args.out, "w", buffering=1)  # noqa: SIM115 - closed below, after spinning stops

    def write(kind: str, **fields) -> None:
        out.write(json.dumps({"kind": kind, "t": time.time(), **fields}) + "\n")

    def stamp(header) -> dict:
        return {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec}

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name.startswith(args.node):
                write("diagnostics", values={kv.key: kv.value for kv in status.values})

    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, f"/{args.node}/{RESULT_JSON_TOPIC}",
                             lambda m: write("result", **json.loads(m.data)), reliable)
    node.create_subscription(String, f"/{args.camera}/ground_truth",
                             lambda m: write("truth", **json.loads(m.data)), reliable)
    node.create_subscription(String, f"/{args.node}/backend", lambda m: write("backend", backend=m.data), latched)
    events = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, f"/{args.node}/events", lambda m: write("event", **json.loads(m.data)), events)
    node.create_subscription(Image, "/image", lambda m: write("image", stamp=stamp(m.header)),
                             qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)
    try:
        while not stop:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        out.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
