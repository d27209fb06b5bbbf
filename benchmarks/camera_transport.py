"""Camera frames from a separate publisher process to perception_node: published vs received vs
answered, estimated transport loss and end-to-end latency, per DDS set-up.

A camera driver is another process, usually with Fast DDS' default settings. For each set-up, one
perception_node (local model only) runs, and for each case a publisher process (this script with
--publish) sends raw rgb8 `sensor_msgs/Image` or JPEG `sensor_msgs/CompressedImage` frames at a
steady rate, stamped just before publishing and numbered in frame_id. Set-ups (both processes get the
same environment):

  default     Fast DDS defaults, as a third-party driver started by its own launch file runs
  profile     FASTRTPS_DEFAULT_PROFILES_FILE=config/fastdds.xml (16 MiB shared memory + UDP)
  udp         FASTDDS_BUILTIN_TRANSPORTS=UDPv4: what a camera on another host gets (over loopback here)
  large_data  FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (shared memory + TCP)

Prints a table and writes JSON (default under runs/).

    .venv/bin/python benchmarks/camera_transport.py --seconds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.ros.launch_description import DDS_PROFILE, ProcessSpec  # noqa: E402
from robot_compress.runtime import processes  # noqa: E402
from robot_compress.runtime.latency_stats import percentile  # noqa: E402
from robot_compress.runtime.polling import wait_until  # noqa: E402

TOPIC = "/bench/camera/image_raw"
SETUPS = {
    "default": {},
    "profile": {"FASTRTPS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE)},
    "udp": {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"},
    "large_data": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
}
DDS_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")


def environment(setup: str, domain: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DDS_VARIABLES}
    return {**env, **SETUPS[setup], "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}


# --- the publisher process -----------------------------------------------------------------------

def publish(args) -> int:
    """Runs in its own process: wait for the node, publish for `seconds`, print the count as JSON."""
    import cv2
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from robot_compress.runtime.datasets import load_cifar10_npz

    images = load_cifar10_npz(args.data, limit=30).images
    frames = [cv2.resize(img, (args.width, args.height), interpolation=cv2.INTER_NEAREST) for img in images]
    if args.kind == "jpeg":
        payloads = [cv2.imencode(".jpg", f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
        msg = CompressedImage(format="jpeg")
        topic = f"{TOPIC}/compressed"
    else:
        payloads = [f.tobytes() for f in frames]
        msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
        topic = TOPIC
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    pub = node.create_publisher(type(msg), topic, qos_profile_sensor_data)
    try:
        wait_until(pub.get_subscription_count, 30.0, "a subscriber", interval_s=0.05)
    except TimeoutError:
        print(json.dumps({"error": "no subscriber"}))
        return 2
    time.sleep(0.5)  # let the subscriber's side of the match settle
    period, sent = 1.0 / args.rate, 0
    next_at = time.monotonic()
    end = next_at + args.seconds
    while time.monotonic() < end:
        msg.data = payloads[sent % len(payloads)]
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        msg.header.frame_id = f"{args.case}#{sent}"
        pub.publish(msg)
        sent += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    time.sleep(0.3)
    print(json.dumps({"published": sent, "payload_bytes": int(np.mean([len(p) for p in payloads]))}))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# --- the benchmark process -------------------------------------------------------------------------

class Listener:
    """Results and diagnostics of the node, in this process (small messages), with the set-up's
    transports: a LARGE_DATA participant and a default one do not talk to each other."""

    def __init__(self):
        from robot_compress.ros.result_recorder import BackgroundNode, subscribe

        self.lock = threading.Lock()
        self.results: list[tuple[float, dict]] = []
        self.diagnostics: dict[str, str] = {}
        self.backend = None
        self._ros = BackgroundNode("camera_transport_bench")
        subscribe(self._ros.node, self._on)
        self._ros.start()

    def _on(self, kind: str, fields: dict) -> None:
        with self.lock:
            if kind == "result":
                self.results.append((time.time(), fields))
            elif kind == "diagnostics" and fields["name"] == "perception_node: router":
                self.diagnostics = fields["values"]
            elif kind == "backend":
                self.backend = fields["backend"]

    def counters(self) -> dict[str, int]:
        with self.lock:
            d = dict(self.diagnostics)
        return {k: int(d.get(k, 0)) for k in ("frames_in", "frames_out", "frames_dropped", "frames_missing_in_transport")}

    def take(self, case: str) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, r) for t, r in self.results if r["frame_id"].startswith(case + "#")]

    def close(self):
        self._ros.close()


def settled_counters(listener: Listener, before: dict[str, int], timeout: float = 10.0) -> dict[str, int]:
    """The node's counters once every frame it got is answered or dropped, minus `before`."""
    def settled() -> bool:
        now = listener.counters()
        return now["frames_out"] + now["frames_dropped"] >= now["frames_in"]

    with contextlib.suppress(TimeoutError):
        wait_until(settled, timeout, interval_s=0.1)
    time.sleep(0.6)  # one more diagnostics period
    now = listener.counters()
    return {k: now[k] - before[k] for k in now}


def run_setup(setup: str, args, domain: int, log_dir: Path) -> list[dict]:
    env = environment(setup, domain)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    # the listener's participant takes this set-up's transports too (Fast DDS reads them per participant)
    for variable in DDS_VARIABLES:
        os.environ.pop(variable, None)
    os.environ.update(SETUPS[setup])
    spec = ProcessSpec("perception_node", "perception_node", params_file=str(REPO / "config" / "perception.yaml"),
                       parameters={"local_model": str(args.local_model), "edge_url": "", "diagnostics_period_s": 0.5,
                                   "queue_size": 16},
                       remappings={"image": TOPIC, "image/compressed": f"{TOPIC}/compressed"})
    node = processes.start(spec.command(), log_dir / f"perception_node-{setup}.log", env=env, cwd=REPO)
    listener = Listener()
    rows = []
    try:
        def ready() -> bool:
            if node.poll() is not None:
                raise RuntimeError(f"perception_node exited with {node.returncode} ({setup}); see {log_dir}")
            return listener.backend == "local"

        wait_until(ready, 60.0, f"perception_node ready ({setup}; see {log_dir})", interval_s=0.05)
        for kind in args.kinds.split(","):
            for width, height in ((640, 480), (1280, 720)):
                for rate in (15.0, 30.0):
                    case = f"{setup}_{kind}_{width}x{height}_{rate:g}"
                    before = listener.counters()
                    done = subprocess.run(
                        [sys.executable, __file__, "--publish", "--kind", kind, "--width", str(width), "--height",
                         str(height), "--rate", str(rate), "--seconds", str(args.seconds), "--case", case,
                         "--data", str(args.data)], capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=args.seconds + 90)
                    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                    if done.returncode != 0 or not lines:
                        raise RuntimeError(f"publisher failed ({case}): {done.stdout[-1000:]}{done.stderr[-2000:]}")
                    sent = json.loads(lines[-1])
                    counters = settled_counters(listener, before)
                    results = listener.take(case)
                    e2e = [(t - (r["stamp"]["sec"] + r["stamp"]["nanosec"] * 1e-9)) * 1000 for t, r in results]
                    row = {"setup": setup, "kind": kind, "width": width, "height": height, "rate_hz": rate,
                           "payload_bytes": sent["payload_bytes"], "published": sent["published"],
                           "received": counters["frames_in"], "answered": len(results),
                           "queue_dropped": counters["frames_dropped"],
                           "estimated_missing": counters["frames_missing_in_transport"],
                           "lost_pct": 100.0 * (1 - counters["frames_in"] / max(1, sent["published"])),
                           "e2e_p50_ms": percentile(e2e, 50), "e2e_p99_ms": percentile(e2e, 99)}
                    rows.append(row)
                    print(format_row(row), flush=True)
    finally:
        listener.close()
        processes.stop(node)
    return rows


HEADER = (f"{'set-up':10} {'kind':4} {'size':>9} {'Hz':>3} {'KiB':>5} {'published':>9} {'received':>8} "
          f"{'answered':>8} {'lost %':>6} {'estimated':>9} {'e2e p50':>7} {'e2e p99':>7}")


def _ms(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else f"{'-':>7}"


def format_row(r: dict) -> str:
    ms = _ms
    return (f"{r['setup']:10} {r['kind']:4} {r['width']:>4}x{r['height']:<4} {r['rate_hz']:3g} "
            f"{r['payload_bytes'] / 1024:5.0f} {r['published']:9d} {r['received']:8d} {r['answered']:8d} "
            f"{r['lost_pct']:6.1f} {r['estimated_missing']:9d} {ms(r['e2e_p50_ms'])} {ms(r['e2e_p99_ms'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing seconds per case (default: 3)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated of {list(SETUPS)}")
    parser.add_argument("--kinds", default="raw,jpeg", help="comma-separated: raw, jpeg")
    parser.add_argument("--local-model", type=Path, default=REPO / "models" / "robot_balanced")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10" / "test_dev.npz")
    parser.add_argument("--out", type=Path,
                        default=REPO / "runs" / f"camera_transport-{time.strftime('%Y%m%d-%H%M%S')}.json")
    # the publisher process
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="raw", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=640, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=480, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=15.0, help=argparse.SUPPRESS)
    parser.add_argument("--case", default="case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        return publish(args)

    from robot_compress.runtime.cpu_info import cpu_description

    unknown = sorted(set(args.setups.split(",")) - set(SETUPS))
    if unknown:
        parser.error(f"unknown set-up(s) {unknown}; known: {list(SETUPS)}")
    log_dir = args.out.with_suffix("")
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(f"camera transport: {args.seconds:g} s per case, CPU {cpu_description()}, {os.cpu_count()} cores, "
          f"load average {load_before[0]:.1f}, {time.strftime('%Y-%m-%d')}")
    print(HEADER)
    rows = []
    for i, setup in enumerate(args.setups.split(",")):
        rows += run_setup(setup, args, 100 + (os.getpid() + i) % 100, log_dir)
    report = {"settings": {k: str(v) for k, v in vars(args).items() if k not in ("publish", "kind", "case")},
              "rows": rows, "machine": {"cpu": cpu_description(), "cpus": os.cpu_count(), "platform": platform.platform(),
                                        "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("lost % = 1 - received / published; estimated = the node's frames_missing_in_transport "
          "(cannot see frames lost after the last one received)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
