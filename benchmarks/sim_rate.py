"""How fast the MuJoCo TurtleBot3 simulation renders here: frames/s and CPU use, free-running.

    python benchmarks/sim_rate.py                 # 320x240 and 640x480, with and without the occlusion pass
    python benchmarks/sim_rate.py --seconds 20

Each row drives the scripted patrol (1/15 s of simulated time per frame, the rate sim_world publishes
by default) and renders as fast as it can for --seconds: the camera image, the segmentation pass when
occlusion is on, and the ground truth. CPU is the process's CPU time over wall time (1.0 = one core;
Mesa's software renderer uses several threads). Writes runs/sim_rate.json and prints a markdown table.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per row")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sim_rate.json")
    args = parser.parse_args()
    from robot_compress.runtime.cpu_info import cpu_name
    from robot_compress.sim.rendering import choose_backend

    backend = choose_backend()
    rows = [measure(w, h, occ, args.seconds) for w, h in ((320, 240), (640, 480)) for occ in (False, True)]
    meta = {"cpu": cpu_name(), "cores": os.cpu_count(), "backend": backend, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_avg_1min": os.getloadavg()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"MuJoCo TurtleBot3 simulation, free-running; {meta['cpu']} ({meta['cores']} cores, 1-min load "
          f"{meta['load_avg_1min']:.1f}), MUJOCO_GL={backend}, {meta['date']}\n")
    print("| resolution | occlusion pass | frames/s | ms/frame | CPU (cores) | boxes/frame |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']}x{r['height']} | {'on' if r['occlusion'] else 'off'} | {r['fps']} | {r['ms_per_frame']} "
              f"| {r['cpu_cores']} | {r['boxes_per_frame']} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
