"""mAP of a detector training stage's last epoch, beside the epoch the stage kept.

    .venv/bin/python benchmarks/detector_last_epoch_map.py runs/ablation/work/prune25_finetune_e6 [...]

A training stage keeps its best epoch by a held-out coco/train loss, which can be the network it
started from. This scores the last epoch's weights (the stage's train_state.pt) too, so a
comparison of training losses can see what the training did whichever epoch was kept. Evaluation
only: the scores pick nothing. Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from robot_compress.compress.detection.export import export_detector
from robot_compress.compress.detection.task import EvalFolder, coco_score


def score(model: torch.nn.Module, size: int, folder: Path, threads: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = export_detector(model.cpu().eval(), Path(tmp) / "model.onnx", size)
        result = coco_score(path, EvalFolder(folder, None), threads)
    return result.map50_95, result.map50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work_dirs", nargs="+", type=Path, help="`robot-compress compress --work-dir` folders")
    parser.add_argument("--stage", default="02_distill")
    parser.add_argument("--eval", type=Path, default=Path("../shared/data/coco/val_dev"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for work in args.work_dirs:
        stage = work / args.stage
        model = torch.load(stage / "model.pt", map_location="cpu", weights_only=False)
        state = torch.load(stage / "train_state.pt", map_location="cpu", weights_only=False)
        size = json.loads((work / "run.json").read_text())["recipe"]["data"]["input_size"][0]
        kept_epoch = next((h["epoch"] for h in state["history"]
                           if h.get("val_selected", h["val_loss"]) == state["best_loss"]), 0)
        kept = score(model, size, args.eval, args.threads)
        model.load_state_dict(state["model"])
        last = score(model, size, args.eval, args.threads)
        rows.append({"work_dir": str(work), "kept_epoch": kept_epoch, "last_epoch": state["epoch"],
                     "kept_map50_95": kept[0], "kept_map50": kept[1], "last_map50_95": last[0], "last_map50": last[1]})
    print("| run | kept epoch | mAP50-95 | mAP50 | last epoch | mAP50-95 | mAP50 |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['work_dir']).name} | {r['kept_epoch']} | {r['kept_map50_95']:.1f} | {r['kept_map50']:.1f} | "
              f"{r['last_epoch']} | {r['last_map50_95']:.1f} | {r['last_map50']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
