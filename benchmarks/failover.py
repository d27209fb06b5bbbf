"""Failover benchmark: every link-failure scenario (faults/scenarios.py) for a set duration, end to end.

sim_camera -> perception_node -> edge server, on two network namespaces (robot, edge) joined by
veth, with each fault made for real (robot_compress.faults). Needs root, `ip` and `iptables`.

    sudo .venv/bin/python benchmarks/failover.py [--fault-s 10] [--flap-s 30] [--rate 20]
        [--scenarios kill freeze ...] [--param deadline_ms=60 --param hedge_after_ms=20]
        [--edge edge_server|triton] [--task detection] [--out DIR]

--edge triton runs every scenario against a real Triton 2.51 (the nvidia-pytriton wheel's
tritonserver, serving the edge model's Python-backend twin) instead of the project's edge server.
`--task detection` runs the shipped detectors on coco/val_dev photos at 640x480 (5 Hz, the node's
detection default deadline of 250 ms; faults/experiment.py DETECTION_*) and adds mAP50-95 per
backend to each row.

Prints one table; writes DIR/failover.json (every figure, the settings, the bounds and any
violation) and DIR/<scenario>.png (per-frame latency and backend over time, the fault shaded).
DIR defaults to runs/failover-<time>/. Exit status 1 when a run misses a bound (docs/FAULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.faults import experiment  # noqa: E402
from robot_compress.faults.analysis import analyze, bounds, plot_timeline, violations  # noqa: E402
from robot_compress.faults.experiment import NODE_PARAMS, RunConfig, local_latency_ms, run_scenario  # noqa: E402
from robot_compress.faults.netns import missing_requirements  # noqa: E402
from robot_compress.faults.scenarios import scenarios  # noqa: E402
from robot_compress.runtime.perception_config import settings  # noqa: E402

COLUMNS = [  # header, metric key, format
    ("scenario", "scenario", "{}"), ("class", "fault_class", "{}"), ("frames", "frames_published", "{}"),
    ("lost", "lost", "{}"), ("in transport", "lost_in_transport", "{}"), ("dup", "duplicated", "{}"), ("p50 ms", "latency_p50_ms", "{:.1f}"),
    ("p99 ms", "latency_p99_ms", "{:.1f}"), ("max ms", "latency_max_ms", "{:.1f}"),
    ("1st local ms", "first_local_after_fault_ms", "{:.0f}"), ("hit node ms", "first_hit_node_ms", "{:.1f}"),
    ("hit ms", "first_hit_answered_ms", "{:.1f}"),
    ("hit e2e ms", "first_hit_e2e_ms", "{:.1f}"),
    ("to edge ms", "back_to_edge_ms", "{:.0f}"), ("false alarms", "spurious_failovers", "{}"), ("edge %", "edge_fraction", "{:.0%}"),
    ("top1", "top1", "{:.3f}"), ("top1 edge", "top1_edge", "{:.3f}"), ("top1 local", "top1_local", "{:.3f}"),
    ("mAP", "map50_95", "{:.1f}"), ("mAP edge", "map50_95_edge", "{:.1f}"), ("mAP local", "map50_95_local", "{:.1f}"),
    ("stall ms", "machine_stall_max_ms", "{:.0f}"),  # this machine's worst stall: from 100 ms, bounds mean little
]


def parse_param(text: str) -> tuple[str, float | int | str]:
    name, _, value = text.partition("=")
    for kind in (int, float):
        try:
            return name, kind(value)
        except ValueError:
            continue
    return name, value


def table(rows: list[dict]) -> str:
    def cell(row: dict, key: str, fmt: str) -> str:
        return "-" if row.get(key) is None else fmt.format(row[key])

    cells = [[h for h, _, _ in COLUMNS], *[[cell(r, k, f) for _, k, f in COLUMNS] for r in rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault-s", type=float, default=10.0, help="length of each fault (default 10)")
    parser.add_argument("--flap-s", type=float, default=30.0, help="length of the flapping period (default 30)")
    parser.add_argument("--lead-s", type=float, default=3.0, help="normal service before the fault")
    parser.add_argument("--recover-s", type=float, default=5.0, help="time after the fault to get back")
    parser.add_argument("--task", choices=("classification", "detection"), default="classification",
                        help="detection: the shipped detectors on coco/val_dev photos, mAP per backend")
    parser.add_argument("--rate", type=float, default=None, help="camera frames per second (default 20; 5 detection)")
    parser.add_argument("--image-size", default=None, help="published image WIDTHxHEIGHT (default 320x240; "
                        "640x480 detection)")
    parser.add_argument("--scenarios", nargs="*", help="names to run (default: all)")
    parser.add_argument("--param", action="append", default=[], type=parse_param, metavar="NAME=VALUE",
                        help="perception_node parameter (e.g. deadline_ms=60.0); repeatable")
    parser.add_argument("--source", type=Path, default=None,
                        help="camera frames (default ../shared/data/cifar10/test_dev.npz; coco/val_dev detection)")
    parser.add_argument("--edge", choices=["edge_server", "triton"], default="edge_server",
                        help="which server the edge side runs (default: the project's edge server)")
    parser.add_argument("--node-command", nargs="+", help="how to start perception_node (default: the venv's)")
    parser.add_argument("--out", type=Path, help="output directory (default runs/failover-<time>)")
    args = parser.parse_args()
    unknown = sorted(set(dict(args.param)) - set(settings()))
    if unknown:
        parser.error(f"unknown perception_node parameter(s) {unknown}; it has: {list(settings())}")

    problems = missing_requirements()
    if problems:
        print("failover: cannot run: " + "; ".join(problems), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the namespaces are removed on the way out
    out = args.out or REPO / "runs" / f"failover-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    detection = args.task == "detection"
    args.source = args.source or (experiment.DETECTION_SOURCE if detection
                                  else REPO.parent / "shared" / "data" / "cifar10" / "test_dev.npz")
    args.rate = args.rate or (experiment.DETECTION_RATE_HZ if detection else 20.0)
    width, height = (int(v) for v in (args.image_size or ("640x480" if detection else "320x240")).split("x"))
    models = ({"local_model": experiment.DETECTION_LOCAL_MODEL, "edge_model": experiment.DETECTION_EDGE_MODEL,
               "camera_loop": True} if detection else {})
    config = RunConfig(source=args.source, rate_hz=args.rate, image_size=(width, height),
                       node_params={**NODE_PARAMS, **(experiment.DETECTION_NODE_PARAMS if detection else {}),
                                    **dict(args.param)}, edge_kind=args.edge, **models,
                       **({"node_command": tuple(args.node_command)} if args.node_command else {}))
    local_p50, local_p99 = local_latency_ms(config.local_model, config.source)
    print(f"local model {config.local_model.name}: p50 {local_p50:.2f} ms, p99 {local_p99:.2f} ms (1 thread, idle)")
    chosen = [s for s in scenarios(args.fault_s, args.lead_s, args.recover_s, args.flap_s)
              if not args.scenarios or s.name in args.scenarios]
    rows, report = [], []
    for scenario in chosen:
        os.environ["ROS_DOMAIN_ID"] = str(1 + (os.getpid() + len(rows)) % 200)
        run = run_scenario(scenario, config, out / scenario.name)
        metrics = analyze(run)
        limits = bounds(run, metrics, local_p99)
        missed = violations(metrics, limits)
        plot_timeline(run, metrics, out / f"{scenario.name}.png")
        row = metrics.to_dict()
        if detection:
            from robot_compress.faults.detection_map import run_map
            from robot_compress.runtime.model_contract import ModelDir

            ids = ModelDir.load(config.local_model).manifest.detection.category_ids
            scores = run_map(run.records, args.source / "instances.json", ids)
            row.update(map50_95=scores["all"]["map50_95"], map50_95_edge=scores["edge"]["map50_95"],
                       map50_95_local=scores["local"]["map50_95"], map_images=scores)
        rows.append(row)
        report.append({"scenario": asdict(scenario), "metrics": row, "bounds": asdict(limits),
                       "violations": missed})
        print(f"{scenario.name}: {'ok' if not missed else '; '.join(missed)}", flush=True)
    print()
    print(table(rows))
    (out / "failover.json").write_text(json.dumps({
        "settings": {**vars(args), "source": str(args.source), "out": str(out), "param": dict(args.param),
                     "node_params": config.node_params, "cpus": os.cpu_count(), "machine": platform.platform()},
        "local_latency_ms": {"p50": local_p50, "p99": local_p99},
        "runs": report}, indent=1, default=str))
    print(f"\nwrote {out / 'failover.json'} and {len(rows)} timeline PNGs")
    return 1 if any(r["violations"] for r in report) else 0


if __name__ == "__main__":
    sys.exit(main())
