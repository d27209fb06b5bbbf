"""Detection models compared on the same simulated TurtleBot3 frames: mAP against sim_world's ground truth.

    .venv/bin/python benchmarks/sim_detection_accuracy.py                     # the shipped edge and robot detectors
    .venv/bin/python benchmarks/sim_detection_accuracy.py MODEL_DIR... --seconds 45 --rate-hz 5

`make demo` scores each backend on the frames it happened to answer (the edge before and after the
outage, the robot during it), so its edge and local figures compare the models only roughly. Here
every model answers every frame: the patrol sim_world drives by default (the same MuJoCo world, six
picture boards of coco/val_dev photos, camera at --width x --height, 1/--rate-hz of simulated time
per frame, the segmentation pass trimming hidden boxes), rendered once; each model runs on each frame
the way perception_node runs it (letterbox at the model's own input size, boxes back in image
pixels, the node's box limit) with the demo's score threshold for detection runs (0.001: every box
the graph keeps, as COCO mAP is computed; `--score-threshold 0` takes each manifest's, what the node
publishes by default), and is scored with pycocotools against the frame's boxes, COCO's size
classes included. Latency is each model's batch-1 inference on these
frames, measured in turns, with --threads ONNX Runtime threads (the node's default is 1).

Prints a table and writes --out (JSON: settings, CPU, figures per model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.faults.detection_map import MEDIUM_AREA, SMALL_AREA, sim_truth_dataset  # noqa: E402
from robot_compress.faults.experiment import DETECTION_NODE_PARAMS  # noqa: E402

DEFAULT_MODELS = [REPO / "models" / "coco_yolox_nano_640", REPO / "models" / "robot_yolox_nano_320"]


def render_patrol(frames: int, rate_hz: float, width: int, height: int):
    """The frames (BGR) and their ground-truth boxes, as sim_world publishes them on its default patrol."""
    from tqdm import tqdm

    from robot_compress.sim.scene import SceneSpec
    from robot_compress.sim.simulation import Simulation

    images, truth = [], []
    with Simulation(SceneSpec(width=width, height=height)) as sim:
        for _ in tqdm(range(frames), desc="rendering the patrol", unit="frame"):
            sim.patrol()
            sim.advance(1.0 / rate_hz)
            frame = sim.render()
            images.append(frame.rgb[:, :, ::-1].copy())
            truth.append(frame.boxes)
    return images, truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS,
                        help="detection model directories (default: the shipped edge and robot detectors)")
    parser.add_argument("--seconds", type=float, default=45.0, help="simulated patrol time (default: the demo's 45 s)")
    parser.add_argument("--rate-hz", type=float, default=5.0, help="frames per simulated second (the demo's 5)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model (the node's default)")
    parser.add_argument("--score-threshold", type=float, default=DETECTION_NODE_PARAMS["score_threshold"],
                        help="boxes scored above this are kept (default: the demo's, every box the graph keeps; "
                             "0: each model manifest's, what the node publishes by default)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sim_detection_accuracy.json")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from robot_compress.compress.detection.coco_eval import coco_stats
    from robot_compress.runtime.cpu_info import cpu_description
    from robot_compress.runtime.detection import ImageDetector, rows_to_detections
    from robot_compress.runtime.errors import ModelError
    from robot_compress.runtime.local_backend import LocalBackend
    from robot_compress.runtime.model_contract import ModelDir
    from robot_compress.runtime.perception_config import NodeConfig

    if args.seconds <= 0 or args.rate_hz <= 0 or args.threads < 1 or args.width < 16 or args.height < 16:
        parser.error("need --seconds > 0, --rate-hz > 0, --threads >= 1 and an image of at least 16x16")
    detectors = {}
    for path in args.models:
        try:
            model = ModelDir.load(path)
        except ModelError as exc:
            parser.error(f"{path}: {exc}")
        if model.manifest.detection is None:
            parser.error(f"{path}: a {model.manifest.task} model, not a detection model")
        if model.manifest.name in detectors:
            parser.error(f"{path}: a second model named {model.manifest.name!r}; each row is named by its model")
        detectors[model.manifest.name] = (model, ImageDetector(LocalBackend(model, threads=args.threads)))
    category_ids = next(iter(detectors.values()))[0].manifest.detection.category_ids
    if any(m.manifest.detection.category_ids != category_ids for m, _ in detectors.values()):
        parser.error("the models do not share one label set, so they cannot be scored on the same truth")

    frames = max(1, round(args.seconds * args.rate_hz))
    images, truth = render_patrol(frames, args.rate_hz, args.width, args.height)
    dataset = sim_truth_dataset([{"index": i, "width": args.width, "height": args.height,
                                  "boxes": [box.as_dict() for box in boxes]} for i, boxes in enumerate(truth)],
                                category_ids)
    areas = [a["area"] for a in dataset["annotations"]]

    node = NodeConfig()
    found = {name: {} for name in detectors}
    times = {name: [] for name in detectors}
    for index, bgr in enumerate(tqdm(images, desc="detecting", unit="frame")):
        for name, (model, detector) in detectors.items():  # in turns: a busy spell hits every model alike
            start = time.perf_counter()
            answer = detector.infer(bgr[None])
            times[name].append(1000 * (time.perf_counter() - start))
            threshold = args.score_threshold or model.manifest.detection.score_threshold
            found[name][index] = rows_to_detections(answer[0], model.manifest.labels, threshold, node.max_detections)

    rows = []
    for name, (model, _) in detectors.items():
        rows.append({"model": name, "path": str(model.root), "input_size": model.manifest.preprocessing.input_size[0],
                     **{k: None if v is None else round(v, 2)
                        for k, v in coco_stats(dataset, found[name], category_ids).items()},
                     "boxes_kept": sum(len(d) for d in found[name].values()),
                     "latency_p50_ms": round(statistics.median(times[name]), 2),
                     "latency_p90_ms": round(statistics.quantiles(times[name], n=10)[-1], 2) if frames > 1 else None})
    report = {"settings": {"frames": frames, "rate_hz": args.rate_hz, "seconds": args.seconds, "width": args.width,
                           "height": args.height, "threads": args.threads, "score_threshold": args.score_threshold},
              "cpu": cpu_description(), "truth_boxes": len(areas),
              "truth_small": sum(a < SMALL_AREA for a in areas),
              "truth_medium": sum(SMALL_AREA <= a < MEDIUM_AREA for a in areas),
              "truth_large": sum(a >= MEDIUM_AREA for a in areas), "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"{frames} simulated frames at {args.width}x{args.height}: {len(areas)} truth boxes "
                        f"({report['truth_small']} small, {report['truth_medium']} medium, "
                        f"{report['truth_large']} large); {report['cpu']}, {args.threads} thread(s)")
    for column in ("model", "input", "mAP50-95", "mAP50", "small", "medium", "large", "boxes", "p50 ms"):
        table.add_column(column, justify="left" if column == "model" else "right")

    def fmt(value):
        return "-" if value is None else f"{value:.1f}"

    for r in rows:
        table.add_row(r["model"], str(r["input_size"]), fmt(r["map50_95"]), fmt(r["map50"]), fmt(r["map_small"]),
                      fmt(r["map_medium"]), fmt(r["map_large"]), str(r["boxes_kept"]), f"{r['latency_p50_ms']:.1f}")
    Console(width=160).print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
