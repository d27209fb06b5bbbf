"""How fast the MuJoCo TurtleBot3 simulation renders here: frames/s and CPU use, free-running.

    python benchmarks/sim_rate.py                 # 320x240 and 640x480, with and without the occlusion pass
    python benchmarks/sim_rate.py --seconds 20
    python benchmarks/sim_rate.py --with-stack    # also sim_world under `robot-compress up` with the
                                                  # perception node and a loopback edge server

Each row drives the scripted patrol (1/15 s of simulated time per frame, the rate sim_world publishes
by default) and renders as fast as it can for --seconds: the camera image, the segmentation pass when
occlusion is on, and the ground truth. CPU is the process's CPU time over wall time (1.0 = one core;
Mesa's software renderer uses several threads). Writes runs/sim_rate.json and prints a markdown table.

--with-stack runs `robot-compress up --world turtlebot3 --world-mode coco --edge-server true` asking
sim_world for --stack-rate-hz frames/s, counts the images a subscriber in this process receives over
--seconds, and reads each process's CPU time with psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(width: int, height: int, occlusion: bool, seconds: float) -> dict:
    from robot_compress.sim.scene import SceneSpec
    from robot_compress.sim.simulation import Simulation

    with Simulation(SceneSpec(width, height), occlusion=occlusion) as sim:
        for _ in range(5):  # warm-up: first frames compile shaders and upload textures
            sim.patrol()
            sim.advance(1 / 15)
            sim.render()
        frames, boxes = 0, 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - wall0 < seconds:
            sim.patrol()
            sim.advance(1 / 15)
            boxes += len(sim.render().boxes)
            frames += 1
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"width": width, "height": height, "occlusion": occlusion, "frames": frames,
            "fps": round(frames / wall, 1), "cpu_cores": round(cpu / wall, 2), "ms_per_frame": round(1000 * wall / frames, 1),
            "boxes_per_frame": round(boxes / frames, 2)}


def measure_stack(width: int, height: int, rate_hz: float, seconds: float) -> dict:
    import subprocess
    import sys
    import threading

    import psutil
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from robot_compress.runtime import processes
    from robot_compress.runtime.polling import wait_until
    from robot_compress.runtime.processes import free_port

    up = processes.start([sys.executable, "-m", "robot_compress.cli", "up", "--world", "turtlebot3", "--world-mode",
                          "coco", "--edge-server", "true", "--edge-port", str(free_port()), "--world-width", str(width),
                          "--world-height", str(height), "--world-rate-hz", str(rate_hz)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("sim_rate_listener", context=context)
    arrivals: list[float] = []
    node.create_subscription(Image, "/camera/image_raw", lambda _: arrivals.append(time.perf_counter()),
                             qos_profile_sensor_data)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    running = [True]
    thread = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(lambda: running[0], False)])
    thread.start()
    try:
        wait_until(lambda: len(arrivals) >= 20, 90.0, "20 sim_world images under `robot-compress up`", interval_s=0.2)
        children = {c.pid: c for c in psutil.Process(up.pid).children(recursive=True)}
        before = {pid: sum(c.cpu_times()[:2]) for pid, c in children.items()}
        start, count0 = time.perf_counter(), len(arrivals)
        time.sleep(seconds)
        wall, frames = time.perf_counter() - start, len(arrivals) - count0
        cpu = {}
        for pid, child in children.items():
            name = " ".join(child.cmdline()[:3]).rsplit("/", 1)[-1]
            key = next((k for k in ("sim_world", "perception_node", "edge") if k in " ".join(child.cmdline())), name)
            cpu[key] = round(cpu.get(key, 0.0) + (sum(child.cpu_times()[:2]) - before[pid]) / wall, 2)
    finally:
        running[0] = False
        thread.join()
        node.destroy_node()
        rclpy.shutdown(context=context)
        processes.stop(up, grace_s=30.0)
    return {"width": width, "height": height, "requested_hz": rate_hz, "fps": round(frames / wall, 1),
            "cpu_cores": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per row")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sim_rate.json")
    parser.add_argument("--with-stack", action="store_true", help="also measure sim_world with the node and edge")
    parser.add_argument("--stack-rate-hz", type=float, default=30.0, help="rate asked of sim_world with --with-stack")
    args = parser.parse_args()
    from robot_compress.runtime.cpu_info import cpu_description
    from robot_compress.sim.rendering import choose_backend

    backend = choose_backend()
    rows = [measure(w, h, occ, args.seconds) for w, h in ((320, 240), (640, 480)) for occ in (False, True)]
    stack = [measure_stack(w, h, args.stack_rate_hz, args.seconds) for w, h in ((320, 240), (640, 480))] \
        if args.with_stack else []
    meta = {"cpu": cpu_description(), "cores": os.cpu_count(), "backend": backend, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_avg_1min": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "stack": stack}, indent=2) + "\n")
    print(f"MuJoCo TurtleBot3 simulation, free-running; {meta['cpu']} ({meta['cores']} cores, 1-min load "
          f"{meta['load_avg_1min']:.1f}), MUJOCO_GL={backend}, {meta['date']}\n")
    print("| resolution | occlusion pass | frames/s | ms/frame | CPU (cores) | boxes/frame |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']}x{r['height']} | {'on' if r['occlusion'] else 'off'} | {r['fps']} | {r['ms_per_frame']} "
              f"| {r['cpu_cores']} | {r['boxes_per_frame']} |")
    if stack:
        print(f"\nsim_world (occlusion on) asked for {args.stack_rate_hz:g} Hz under `robot-compress up` with "
              "perception_node and a loopback edge server; CPU in cores per process:\n")
        print("| resolution | images/s received | CPU sim_world | CPU perception_node | CPU edge |")
        print("|---|---|---|---|---|")
        for r in stack:
            c = r["cpu_cores"]
            print(f"| {r['width']}x{r['height']} | {r['fps']} | {c.get('sim_world', '-')} | "
                  f"{c.get('perception_node', '-')} | {c.get('edge', '-')} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
