"""Detector compression results: the finished `robot-compress compress` runs of YOLOX recipes, side by side.

    python benchmarks/compress_detector.py runs/yolox_nano_prune25_distill runs/yolox_nano_prune25_finetune \
        runs/yolox_nano_prune50_distill

Each argument is a run's work directory (`--work-dir`, by default runs/<name of --out>). mAP,
parameters, MACs and bytes come from each stage's own metrics.json (measured by the pipeline on
coco/val_dev); latency is measured again here, batch 1, on one letterboxed coco/train photo, for
every artefact in one process, the files taking turns, so that all of them see the same machine
load: the teacher, each run's FP32 export and INT8 model, and the shipped unpruned INT8 robot model
(models/robot_yolox_nano_320), against which the pruned INT8 models' speed-up is given. Prints a
markdown table, writes runs/compress_detector.json and docs/detection_pareto.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import cv2
import numpy as np

from robot_compress.compress.metrics import interleaved_samples_ms
from robot_compress.compress.report import pareto_plot
from robot_compress.runtime.cpu_info import cpu_description
from robot_compress.runtime.detection import letterbox
from robot_compress.runtime.local_backend import make_session
from robot_compress.runtime.model_contract import ModelDir

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared/data/coco/train/images/000000000009.jpg"
UNPRUNED_INT8 = REPO / "models" / "robot_yolox_nano_320"
KINDS = {"export_onnx": "FP32", "quantize_int8": "INT8"}


def artefacts(work_dirs: list[Path]) -> list[dict]:
    """The teacher once, then each run's one-shot cut (mAP only; once per distinct cut), FP32 export
    and INT8 model."""
    rows: list[dict] = []
    cuts: set[tuple[int, float]] = set()
    for work_dir in work_dirs:
        run = json.loads((work_dir / "run.json").read_text())
        stages = sorted(d for d in work_dir.glob("[0-9][0-9]_*") if (d / "metrics.json").is_file())
        if not rows:
            teacher = work_dir / "00_teacher"
            rows.append({"label": "YOLOX-nano teacher, FP32", "onnx": str(teacher / "model.onnx"),
                         "metrics": json.loads((teacher / "metrics.json").read_text())})
        epochs = {s["stage"]: s.get("epochs") for s in run["recipe"]["stages"]}
        for stage in stages[1:]:
            kind = stage.name[3:]
            metrics = json.loads((stage / "metrics.json").read_text())
            if kind == "prune_structured":
                cut = (metrics["params"], round(metrics["map50_95"], 3))
                if cut not in cuts:  # runs that differ only after the cut share one row
                    cuts.add(cut)
                    rows.append({"label": f"{run['recipe_name']}: one-shot cut", "onnx": None, "metrics": metrics})
            elif kind in KINDS:
                rows.append({"label": f"{run['recipe_name']} ({epochs.get('distill')} epochs), {KINDS[kind]}",
                             "onnx": str(stage / "model.onnx"), "metrics": metrics, "command": run["command"]})
    unpruned = ModelDir.load(UNPRUNED_INT8)
    rows.append({"label": "robot_yolox_nano_320 (unpruned, shipped), INT8", "onnx": str(unpruned.onnx_path),
                 "metrics": {"map50_95": unpruned.manifest.metrics["map50_95"],
                             "map50": unpruned.manifest.metrics["map50"],
                             "params": None, "macs": None, "bytes": unpruned.onnx_path.stat().st_size}})
    return rows


def retime(rows: list[dict], threads: int, rounds: int, runs: int) -> None:
    timed = [r for r in rows if r["onnx"]]
    sessions = [make_session(r["onnx"], threads=threads) for r in timed]
    photo = cv2.imread(str(PHOTO))
    feed = [{s.get_inputs()[0].name: letterbox(photo, s.get_inputs()[0].shape[1])[0][None]} for s in sessions]
    samples = interleaved_samples_ms([functools.partial(s.run, None) for s in sessions], feed=feed,
                                     rounds=rounds, runs=runs, warmup=5)
    for row, times in zip(timed, samples, strict=True):
        row["p50_ms"] = float(np.median(times))


def markdown(rows: list[dict]) -> str:
    base = next(r["p50_ms"] for r in rows if r["onnx"] and r["label"].startswith("robot_yolox_nano_320"))

    def number(value, fmt="{:,}"):
        return "-" if value is None else fmt.format(value)

    lines = ["| model | mAP50-95 | mAP50 | params | MACs | ONNX bytes | ms 1 thread p50 | speed vs unpruned INT8 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| {r['label']} | {m['map50_95']:.1f} | {m['map50']:.1f} | {number(m.get('params'))} | "
                     f"{number(m.get('macs') and m['macs'] / 1e6, '{:.1f} M')} | {number(m.get('bytes'))} | "
                     f"{number(r.get('p50_ms'), '{:.1f}')} | "
                     f"{number(r.get('p50_ms') and base / r['p50_ms'], '{:.2f}x')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dirs", type=Path, nargs="+", help="work directories of finished detector runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10, help="rounds of taking turns")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model per round")
    parser.add_argument("--json", type=Path, default=REPO / "runs" / "compress_detector.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "detection_pareto.png")
    args = parser.parse_args()
    for work_dir in args.work_dirs:
        if not (work_dir / "run.json").is_file():
            parser.error(f"{work_dir} is not the work directory of a compress run (no run.json)")
    rows = artefacts(args.work_dirs)
    retime(rows, args.threads, args.rounds, args.runs)
    table = markdown(rows)
    print(table)
    cpu = cpu_description()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cpu": cpu, "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
                                     "rows": rows}, indent=2) + "\n")
    plotted = [(r["label"], {**r["metrics"], "latency_ms_1t": {"p50": r["p50_ms"]}}) for r in rows if r["onnx"]]
    pareto_plot(plotted, args.plot, f"YOLOX-nano at 320, coco/val_dev mAP vs size and latency ({cpu}, "
                                    f"{args.threads} thread)")
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
