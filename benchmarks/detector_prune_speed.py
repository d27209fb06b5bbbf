"""Which channel-pruning structures make the INT8 YOLOX-nano faster at 320, before any training.

    .venv/bin/python benchmarks/detector_prune_speed.py recipes/yolox_nano_prune50_round8_distill.yaml

The latency of a pruned INT8 model depends on its shape, not on its weights, so each structure
is cut from the recipe's teacher once (l2 importance, batch norms re-estimated), exported to the
detection contract and quantized as the pipeline does (quantize_int8, 32 coco/train calibration
images). The same path turns the unpruned teacher into the reference INT8 model; the shipped
robot model (bias-corrected, same layers in INT8) is timed beside them. Every model is timed in
one process, batch 1 on one letterboxed photo, taking turns (rounds x runs), so the ratios hold on
a busy machine. A structure is a channel ratio per part (the high-resolution parts: stem, dark2,
dark3 and the stride-8 head level; the rest of the backbone, the neck and the other head levels)
and a round_to. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch_pruning as tp

from robot_compress.compress.detection.distill import RECALIBRATION_IMAGES, recalibrate_batchnorm, to_input
from robot_compress.compress.detection.export import export_detector
from robot_compress.compress.detection.quantize import quantize_detector
from robot_compress.compress.detection.task import load_detection_splits, prepare_teacher
from robot_compress.compress.metrics import interleaved_samples_ms
from robot_compress.compress.models import build_model
from robot_compress.compress.recipe import load_recipe
from robot_compress.compress.stages.prune_structured import (
    YOLOX_HIGH_RESOLUTION_PARTS,
    output_layers,
    part_modules,
)
from robot_compress.runtime.cpu_info import cpu_description
from robot_compress.runtime.detection import letterbox
from robot_compress.runtime.local_backend import make_session

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared/data/coco/train/images/000000000009.jpg"
SHIPPED = REPO / "models" / "robot_yolox_nano_320" / "1" / "model.onnx"

# name: (channel ratio of the high-resolution parts, of the rest, round_to)
STRUCTURES = {
    "uniform 0.30 r8": (0.30, 0.30, 8),
    "uniform 0.45 r8": (0.45, 0.45, 8),
    "uniform 0.55 r8": (0.55, 0.55, 8),
    "hi-res 0.50 / rest 0.30 r8": (0.50, 0.30, 8),
    "hi-res 0.50 / rest 0.45 r8": (0.50, 0.45, 8),
    "hi-res 0.60 / rest 0.45 r8": (0.60, 0.45, 8),
    "hi-res 0.75 / rest 0.45 r8": (0.75, 0.45, 8),
    "hi-res 0.50 / rest 0.50 r16": (0.50, 0.50, 16),
    "hi-res 0.75 / rest 0.30 r8": (0.75, 0.30, 8),
    "hi-res 0.75 / rest 0.25 r8": (0.75, 0.25, 8),
    "hi-res 0.60 / rest 0.30 r8": (0.60, 0.30, 8),
}


def cut(teacher, high: float, rest: float, round_to: int | None, size: int):
    model = copy.deepcopy(teacher)
    ratios = part_modules(model, dict.fromkeys(YOLOX_HIGH_RESOLUTION_PARTS, high))
    tp.pruner.MetaPruner(model, torch.zeros(1, 3, size, size), importance=tp.importance.MagnitudeImportance(p=2),
                         pruning_ratio=rest, pruning_ratio_dict=ratios, max_pruning_ratio=0.9,
                         ignored_layers=output_layers(model), round_to=round_to).step()
    return model


def time_models(paths: list[Path], threads: int, rounds: int, runs: int) -> list[float]:
    sessions = [make_session(p, threads=threads) for p in paths]
    photo = cv2.imread(str(PHOTO))
    feeds = [{s.get_inputs()[0].name: letterbox(photo, s.get_inputs()[0].shape[1])[0][None]} for s in sessions]
    samples = interleaved_samples_ms([functools.partial(s.run, None) for s in sessions], feed=feeds, rounds=rounds,
                                     runs=runs, warmup=5)
    return [float(np.median(t)) for t in samples]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=list(STRUCTURES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=REPO / "runs" / "detector_prune_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = load_recipe(args.recipe)
    teacher = build_model(recipe.teacher)
    splits = load_detection_splits(recipe.data, recipe.seed)
    prepare_teacher(teacher, splits)
    size = recipe.data.input_size[0]
    statistics = to_input(splits.train.letterboxed(size, RECALIBRATION_IMAGES), torch.device("cpu"))
    calibration = splits.train.letterboxed(size, 32)
    total = sum(p.numel() for p in teacher.parameters())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def build(label: str, model) -> dict:
            fp32, int8 = Path(tmp) / f"{len(rows)}.onnx", Path(tmp) / f"{len(rows)}_int8.onnx"
            export_detector(model, fp32, size)
            quantize_detector(fp32, int8, calibration)
            params = sum(p.numel() for p in model.parameters())
            macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(1, 3, size, size))
            rows.append({"structure": label, "params": params, "params_removed": 1 - params / total,
                         "macs": float(macs), "onnx": str(int8)})
            print(f"built {label}: {params:,} params (-{1 - params / total:.1%}), {macs / 1e6:.0f} M MACs", flush=True)
            return rows[-1]

        build("unpruned (same INT8 path)", teacher)
        for name in args.structures:
            high, rest, round_to = STRUCTURES[name]
            model = cut(teacher, high, rest, round_to, size)
            recalibrate_batchnorm(model, statistics)
            build(name, model)
        paths = [Path(r["onnx"]) for r in rows] + [SHIPPED]
        times = time_models(paths, args.threads, args.rounds, args.runs)
    shipped_ms = times[-1]
    rows.append({"structure": "robot_yolox_nano_320 (shipped, unpruned)", "params": None, "params_removed": 0.0,
                 "macs": None})
    for row, ms in zip(rows, times, strict=True):
        row["int8_ms"] = ms
        row["speedup"] = times[0] / ms
        row["speedup_vs_shipped"] = shipped_ms / ms
        row.pop("onnx", None)
    print(f"\nINT8 at {size}, batch 1, {args.threads} thread, median of {args.rounds} x {args.runs} runs taken in "
          f"turns ({cpu_description()})")
    print("| structure | params | removed | MACs | INT8 ms | speed-up vs unpruned INT8 (same path / shipped) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        params = "-" if r["params"] is None else f"{r['params']:,}"
        macs = "-" if r["macs"] is None else f"{r['macs'] / 1e6:.0f} M"
        print(f"| {r['structure']} | {params} | {r['params_removed']:.1%} | {macs} | {r['int8_ms']:.1f} | "
              f"{r['speedup']:.2f}x / {r['speedup_vs_shipped']:.2f}x |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"recipe": str(args.recipe), "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d"),
                                     "threads": args.threads, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
