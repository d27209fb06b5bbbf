"""End-to-end latency of the perception node: camera stamp -> classification received.

Publishes 640x480 rgb8 frames (CIFAR-10 test_dev, upscaled) at 30 Hz from this process to a real
perception_node process, once with a real edge server on loopback and once local only, and
reports per mode: end-to-end latency p50/p99, router overhead per frame (router latency minus the
answering backend's own time), the node's CPU % and peak RSS, frames delivered and dropped, and
whether torch was mapped into the node. Prints a table and writes JSON (default under runs/).

    .venv/bin/python benchmarks/node_latency.py --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.edge.process import EdgeServerProcess  # noqa: E402
from robot_compress.ros.launch_description import ProcessSpec, dds_environment  # noqa: E402
from robot_compress.runtime import processes  # noqa: E402
from robot_compress.runtime.datasets import load_cifar10_npz  # noqa: E402
from robot_compress.runtime.latency_stats import percentile as nearest_rank  # noqa: E402
from robot_compress.runtime.polling import wait_until  # noqa: E402

TOPIC = "/bench/image_raw"
TARGETS = {"edge_p99_ms": 25.0, "local_extra_p99_ms": 10.0, "router_overhead_ms": 0.5, "rss_mb": 300.0}


def percentile(values, q):
    value = nearest_rank(values, q)
    return float("nan") if value is None else value


def start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, **dds_environment(), "PYTHONUNBUFFERED": "1"}
    return processes.start(command, log, env=env, cwd=REPO)


class Bench:
    """Publisher and result recorder in this process, on their own rclpy context."""

    def __init__(self):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from robot_compress.ros.result_recorder import BackgroundNode, subscribe

        self._ros = BackgroundNode("node_latency_bench")
        self.Image = Image
        self.pub = self._ros.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.records: list[tuple[float, dict]] = []
        self.backend = None
        self.diagnostics: dict[str, str] = {}
        subscribe(self._ros.node, self._on)
        self._ros.start()

    def _on(self, kind: str, fields: dict) -> None:
        if kind == "result":
            received = time.time()
            with self.lock:
                self.records.append((received, fields))
        elif kind == "backend":
            self.backend = fields["backend"]
        elif kind == "diagnostics" and fields["name"] == "perception_node: router":
            self.diagnostics = fields["values"]

    def publish_for(self, frames: list[bytes], width: int, height: int, rate_hz: float, seconds: float) -> int:
        """Publish at a steady rate; stamps are taken right before publishing."""
        period, sent = 1.0 / rate_hz, 0
        msg = self.Image(height=height, width=width, encoding="rgb8", step=width * 3)
        next_at = time.monotonic()
        end = next_at + seconds
        while time.monotonic() < end:
            msg.data = frames[sent % len(frames)]
            now = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
            self.pub.publish(msg)
            sent += 1
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        return sent

    def take(self) -> list[tuple[float, dict]]:
        with self.lock:
            records, self.records = self.records, []
        return records

    def close(self):
        self._ros.close()


def run_mode(mode: str, args, frames: list[bytes], log_dir: Path) -> dict:
    os.environ["ROS_DOMAIN_ID"] = str(150 + (os.getpid() + (mode == "edge")) % 50)
    children = []
    edge_url = ""
    try:
        if mode == "edge":
            edge = EdgeServerProcess(args.edge_model.parent, log_dir / "edge_server.log")
            children.append(edge.start().proc)
            edge_url = edge.url
        node = start(ProcessSpec("perception_node", "perception_node",
                                 params_file=str(REPO / "config" / "perception.yaml"),
                                 parameters={"local_model": str(args.local_model), "edge_url": edge_url,
                                             "edge_model": args.edge_model.name},
                                 remappings={"image": TOPIC}).command(), log_dir / f"perception_node-{mode}.log")
        children.append(node)
        bench = Bench()
        try:
            def ready() -> bool:
                if node.poll() is not None:
                    raise RuntimeError(f"perception_node exited with {node.returncode}; see {log_dir}")
                return bench.backend == ("edge" if mode == "edge" else "local") and bench.pub.get_subscription_count()

            wait_until(ready, 30.0, f"the node in {mode} mode (see {log_dir})", interval_s=0.05)
            time.sleep(0.5)
            bench.publish_for(frames, args.width, args.height, args.rate, args.warmup)
            time.sleep(0.3)
            bench.take()
            proc = psutil.Process(node.pid)
            proc.cpu_percent()
            rss = []
            sampler_stop = threading.Event()

            def sample():
                while not sampler_stop.wait(0.2):
                    rss.append(proc.memory_info().rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            sent = bench.publish_for(frames, args.width, args.height, args.rate, args.duration)
            time.sleep(0.5)
            cpu = proc.cpu_percent()  # average since the call before the measured window
            sampler_stop.set()
            sampler.join()
            with open(f"/proc/{node.pid}/maps") as f:
                torch_mapped = "torch" in f.read()
            records = bench.take()
            time.sleep(1.1)  # one more diagnostics period
            node_counters = {k: int(bench.diagnostics.get(k, -1)) for k in ("frames_in", "frames_out", "frames_dropped")}
        finally:
            bench.close()
    finally:
        processes.stop(reversed(children))
    e2e = [(received - (r["stamp"]["sec"] + r["stamp"]["nanosec"] * 1e-9)) * 1000 for received, r in records]
    overhead = [r["latency_ms"] - r["inference_ms"] for _, r in records]
    backend_ms = [r["inference_ms"] for _, r in records]
    backends = {b: sum(r["backend"] == b for _, r in records) for b in {r["backend"] for _, r in records}}
    return {
        "mode": mode, "frames_sent": sent, "results": len(records), "backends": backends,
        "node_counters_incl_warmup": node_counters,
        "e2e_p50_ms": percentile(e2e, 50), "e2e_p99_ms": percentile(e2e, 99), "e2e_max_ms": max(e2e, default=0),
        "backend_p50_ms": percentile(backend_ms, 50), "backend_p99_ms": percentile(backend_ms, 99),
        "router_overhead_p50_ms": percentile(overhead, 50), "router_overhead_p99_ms": percentile(overhead, 99),
        "node_cpu_percent": cpu, "node_rss_peak_mb": max(rss, default=0) / 2**20, "torch_in_node": torch_mapped,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per mode (default: 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default: 2)")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second (default: 30)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--edge-model", type=Path, default=REPO / "models" / "cifar10_resnet56")
    parser.add_argument("--local-model", type=Path, default=REPO / "models" / "robot_balanced")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cifar10" / "test_dev.npz")
    parser.add_argument("--modes", default="edge,local", help="comma-separated: edge, local")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / f"node_latency-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()

    os.environ.update(dds_environment())  # this process publishes camera-sized frames too
    images = load_cifar10_npz(args.data, limit=60).images
    frames = [cv2.resize(img, (args.width, args.height), interpolation=cv2.INTER_NEAREST).tobytes() for img in images]
    log_dir = args.out.with_suffix("")
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results = [run_mode(mode, args, frames, log_dir) for mode in args.modes.split(",")]
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load_before,
                          "loadavg_after": os.getloadavg()}, "targets": TARGETS}
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    header = (f"{'mode':6} {'sent':>5} {'results':>7} {'e2e p50':>8} {'e2e p99':>8} {'backend p99':>11} "
              f"{'router p50/p99':>15} {'CPU %':>6} {'RSS MB':>7} torch")
    print(f"node latency: {args.rate:g} Hz {args.width}x{args.height} rgb8, {args.duration:g} s per mode, "
          f"load average {load_before[0]:.1f} before (2-core machine shared with other jobs)")
    print(header)
    for r in results:
        print(f"{r['mode']:6} {r['frames_sent']:5d} {r['results']:7d} {r['e2e_p50_ms']:8.2f} {r['e2e_p99_ms']:8.2f} "
              f"{r['backend_p99_ms']:11.2f} {r['router_overhead_p50_ms']:7.3f}/{r['router_overhead_p99_ms']:<7.3f} "
              f"{r['node_cpu_percent']:6.1f} {r['node_rss_peak_mb']:7.1f} {'yes' if r['torch_in_node'] else 'no'}"
              f"   {r['backends']} node {r['node_counters_incl_warmup']}")
    print(f"targets: edge e2e p99 <= {TARGETS['edge_p99_ms']} ms, local e2e p99 <= local inference p99 + "
          f"{TARGETS['local_extra_p99_ms']} ms, router overhead <= {TARGETS['router_overhead_ms']} ms, "
          f"RSS <= {TARGETS['rss_mb']} MB")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
