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
  {"kind": "diagnostics", "t": ..., "name": ..., "values": {...}}
(robot_compress.ros.result_recorder makes the subscriptions.)
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

    from robot_compress.ros.result_recorder import subscribe

    rclpy.init()
    node = rclpy.create_node("fault_recorder")
    out = open(args.out, "w", buffering=1)  # noqa: SIM115 - closed below, after spinning stops

    def write(kind: str, fields: dict) -> None:
        out.write(json.dumps({"kind": kind, "t": time.time(), **fields}) + "\n")

    subscribe(node, write, perception_node=args.node, camera=args.camera, image_topic="/image")
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
