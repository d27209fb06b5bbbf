"""How much one-shot channel pruning damages YOLOX-nano, before any training.

    .venv/bin/python benchmarks/detector_prune_sensitivity.py recipes/yolox_nano_prune50_distill.yaml

Measures the detection distillation loss (compress/detection/distill.py) of pruned copies of the
recipe's teacher against the teacher, on the recipe's held-out coco/train images (never val_dev),
after the batch-norm statistics are re-estimated as prune_structured does: the teacher against
itself (the floor), the whole network at the recipe's channel ratio with each importance, and
each part alone (backbone, neck, head) at a 0.3 channel ratio. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch_pruning as tp

from robot_compress.compress.detection.distill import (
    RECALIBRATION_IMAGES,
    recalibrate_batchnorm,
    to_input,
    validation_loss,
)
from robot_compress.compress.detection.task import load_detection_splits, prepare_teacher
from robot_compress.compress.models import build_model
from robot_compress.compress.recipe import load_recipe
from robot_compress.compress.stages.prune_structured import channel_ratio_for, output_layers
from robot_compress.runtime.cpu_info import cpu_name

IMPORTANCES = {"l2": lambda: tp.importance.MagnitudeImportance(p=2), "bn_scale": tp.importance.BNScaleImportance,
               "lamp": lambda: tp.importance.LAMPImportance(p=2)}


def parts(model) -> dict[str, list]:
    neck = [module for name, module in model.backbone.named_children() if name != "backbone"]
    return {"backbone": [model.backbone.backbone], "neck": neck, "head": [model.head]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--json", type=Path, default=Path("runs/detector_prune_sensitivity.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    recipe = load_recipe(args.recipe)
    prune = next(stage for stage in recipe.stages if stage.name == "prune_structured")
    teacher = build_model(recipe.teacher)
    splits = load_detection_splits(recipe.data, recipe.seed)
    prepare_teacher(teacher, splits)
    size = recipe.data.input_size[0]
    val = splits.val.letterboxed(size)
    statistics_images = to_input(splits.train.letterboxed(size, RECALIBRATION_IMAGES), torch.device("cpu"))
    example = torch.zeros(1, 3, size, size)
    ratio = channel_ratio_for(teacher, prune, example)
    rows = [{"cut": "none (teacher vs itself)", "params": sum(p.numel() for p in teacher.parameters()),
             "loss": validation_loss(teacher, teacher, val)}]

    def cut(label: str, importance, channel_ratio: float, keep: list[str]) -> None:
        model = copy.deepcopy(teacher)
        ignored = output_layers(model) + [m for part in keep for m in parts(model)[part]]
        tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=channel_ratio,
                             max_pruning_ratio=prune.max_layer_ratio, ignored_layers=ignored).step()
        recalibrate_batchnorm(model, statistics_images)
        rows.append({"cut": label, "params": sum(p.numel() for p in model.parameters()),
                     "loss": validation_loss(model, teacher, val)})
        print(f"{label:45s} {rows[-1]['params']:>9,} params  loss {rows[-1]['loss']:.2f}", flush=True)

    for name, importance in IMPORTANCES.items():
        cut(f"whole network, channel ratio {ratio:.3f}, {name}", importance(), ratio, [])
    for part in ("backbone", "neck", "head"):
        cut(f"{part} only, channel ratio 0.3, l2", IMPORTANCES["l2"](), 0.3, [p for p in parts(teacher) if p != part])
    result = {"recipe": str(args.recipe), "val_images": len(splits.val), "cpu": cpu_name(),
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
