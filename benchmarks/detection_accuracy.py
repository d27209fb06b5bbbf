"""COCO mAP and latency of detection model directories, through the robot's own preprocessing.

    .venv/bin/python benchmarks/detection_accuracy.py runs/models/coco_yolox_nano_640 runs/models/coco_yolox_nano_416

For each model: mAP50-95 / mAP50 on coco/val_dev (pycocotools) with the local ONNX Runtime backend
and every box the graph returns (its NMS floor is the usual 0.001), beside the published figure;
latency of one letterboxed frame (batch 1) with 1 and 2 threads, all models measured round-robin
in one run so their ratios survive a busy machine. Where the --raw-head file's input
size matches a model's, the same images also go through that raw head + the numpy decode and NMS
reference, to show the in-graph decode gives the same mAP. With --unfused, INT8 models are scored
a second time without the fused integer kernels (which differ by CPU kind). Prints a table and
writes JSON; with --record, also writes each model's figures into its manifest's `metrics` (the
shipped models' figures come from this).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from robot_compress.compress.detection.coco_eval import coco_images, evaluate_folder
from robot_compress.compress.metrics import interleaved_samples_ms
from robot_compress.runtime.cpu_info import cpu_description
from robot_compress.runtime.detection import decode_raw, detect, letterbox, nms, to_detections
from robot_compress.runtime.local_backend import LocalBackend, make_session

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared/data"


def latencies_ms(models: list[Path], image: np.ndarray, threads: int, runs: int) -> list[dict]:
    """Batch-1 latency of each model, measured round-robin (one run of each in turn), so that load
    from other processes falls on every model alike and the ratios between them hold."""
    backends = [LocalBackend(path, threads=threads) for path in models]
    tensors = [letterbox(image, b.manifest.preprocessing.input_size[0])[0][None] for b in backends]
    for backend in backends:
        backend.warm_up()
    times = interleaved_samples_ms([b.infer for b in backends], feed=tensors, rounds=runs, runs=1)
    return [{"median": statistics.median(t), "p90": sorted(t)[int(0.9 * (len(t) - 1))], "min": min(t)}
            for t in times]


def is_quantized(onnx_path: Path) -> bool:
    import onnx

    return any(node.op_type == "QuantizeLinear" for node in onnx.load(str(onnx_path)).graph.node)


def raw_head_runner(raw_path: Path, model_dir_backend, threads: int):
    """bgr image -> detections via the raw head ONNX and the numpy decode + NMS reference."""
    session = make_session(raw_path, threads=threads)
    name = session.get_inputs()[0].name
    manifest = model_dir_backend.manifest
    spec = manifest.detection
    size = manifest.preprocessing.input_size[0]

    def run(image):
        tensor, box = letterbox(image, size, pad_value=spec.pad_value)
        raw = session.run(None, {name: tensor.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
        rows = nms(*decode_raw(raw, size), spec.nms_score_threshold, spec.iou_threshold, spec.max_detections)
        return to_detections(rows, box, manifest.labels, 0.0)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=DATA / "coco/val_dev")
    parser.add_argument("--raw-head", type=Path, default=DATA / "weights/yolox_nano-e8af0749.onnx",
                        help="raw-head ONNX (fixed input size) for the numpy decode comparison")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the mAP pass")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per latency figure")
    parser.add_argument("--limit", type=int, help="only the first N images (smoke runs)")
    parser.add_argument("--unfused", action="store_true",
                        help="also score INT8 (QDQ) models without ONNX Runtime's fused integer kernels: the graph "
                             "as its ONNX definition says, the same on every CPU kind")
    parser.add_argument("--out", type=Path, default=REPO / "runs/detection_accuracy.json")
    parser.add_argument("--record", action="store_true",
                        help="write each model's mAP, latency and wire bytes into its manifest.json metrics")
    args = parser.parse_args()

    raw_size = None
    if args.raw_head and args.raw_head.is_file():
        raw_size = make_session(args.raw_head).get_inputs()[0].shape[2]
    first = cv2.imread(str(args.data / "images" / coco_images(args.data)[0]["file_name"]))
    rows = []
    for path in args.models:
        backend = LocalBackend(path, threads=args.threads)
        manifest = backend.manifest
        size = manifest.preprocessing.input_size[0]
        ids = manifest.detection.category_ids
        score = evaluate_folder(args.data, lambda img, b=backend: detect(b, [img], score_threshold=0.0)[0], ids,
                                args.limit)
        row = {"model": path.name, "size": size, "images": score.images, "map50_95": score.map50_95,
               "map50": score.map50, "published_map50_95": manifest.source.get("published_map50_95"),
               "seconds": score.seconds}
        if args.unfused and is_quantized(backend.model.onnx_path):
            backend.session = make_session(backend.model.onnx_path, threads=args.threads, fused=False)
            unfused = evaluate_folder(args.data, lambda img, b=backend: detect(b, [img], score_threshold=0.0)[0],
                                      ids, args.limit)
            row["map50_95_unfused"], row["map50_unfused"] = unfused.map50_95, unfused.map50
        if raw_size == size:
            reference = evaluate_folder(args.data, raw_head_runner(args.raw_head, backend, args.threads), ids,
                                        args.limit)
            row["numpy_decode_map50_95"] = reference.map50_95
            row["numpy_decode_map50"] = reference.map50
        row["wire_bytes_in"] = int(np.prod(manifest.input.shape))
        row["wire_bytes_out"] = int(np.prod(manifest.output.shape)) * 4
        rows.append(row)
    for threads in (1, 2):
        for row, latency in zip(rows, latencies_ms(args.models, first, threads, args.runs), strict=True):
            row[f"latency_ms_{threads}t"] = latency

    cpu = cpu_description()
    table = Table(title=f"detection on {args.data.name} ({rows[0]['images']} images), {cpu}, "
                        f"{time.strftime('%Y-%m-%d')}")
    for column in ("model", "size", "mAP50-95", "mAP50", "unfused mAP50-95", "published", "numpy decode mAP50-95",
                   "1 thread ms", "2 threads ms", "bytes in/out"):
        table.add_column(column, justify="right")
    for r in rows:
        published = r["published_map50_95"]
        table.add_row(r["model"], str(r["size"]), f"{r['map50_95']:.2f}", f"{r['map50']:.2f}",
                      f"{r['map50_95_unfused']:.2f}" if "map50_95_unfused" in r else "-",
                      "-" if not published else f"{published['value']} @{published['input_size']}",
                      f"{r['numpy_decode_map50_95']:.2f} (graph {r['map50_95']:.2f})"
                      if "numpy_decode_map50_95" in r else "-",
                      f"{r['latency_ms_1t']['median']:.1f}", f"{r['latency_ms_2t']['median']:.1f}",
                      f"{r['wire_bytes_in']}/{r['wire_bytes_out']}")
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "data": str(args.data), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.record:
        for path, row in zip(args.models, rows, strict=True):
            record(path, row, cpu, args)
    return 0


def record(model_dir: Path, row: dict, cpu: str, args) -> None:
    """The measured figures into manifest.json's metrics; the ONNX file and its sha256 stay as they are."""
    import onnxruntime

    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    metrics = manifest.setdefault("metrics", {})
    metrics.update({
        "map50_95": round(row["map50_95"], 2), "map50": round(row["map50"], 2),
        "map_eval_data": f"coco/{args.data.name} ({row['images']} images), pycocotools, every box the graph returns",
        "map_measured": {"command": "python benchmarks/detection_accuracy.py " + shlex.join(sys.argv[1:]),
                         "cpu": cpu, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         "onnxruntime": onnxruntime.__version__,
                         "backend": f"LocalBackend (ONNX Runtime, fused kernels), {args.threads} threads"},
        "latency_ms_1t_median": round(row["latency_ms_1t"]["median"], 1),
        "latency_ms_2t_median": round(row["latency_ms_2t"]["median"], 1),
        "wire_bytes_in": row["wire_bytes_in"], "wire_bytes_out": row["wire_bytes_out"]})
    if "map50_95_unfused" in row:
        metrics["map50_95_unfused_reference"] = round(row["map50_95_unfused"], 2)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"recorded in {path}")


if __name__ == "__main__":
    raise SystemExit(main())
