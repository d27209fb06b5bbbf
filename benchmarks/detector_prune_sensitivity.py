"""How much one-shot channel pruning damages YOLOX-nano before any training, per importance criterion.

    .venv/bin/python benchmarks/detector_prune_sensitivity.py recipes/yolox_nano_prune50_distill.yaml \
        --round-to 0 --cuts 0.25 0.5 --scopes uniform global
    .venv/bin/python benchmarks/detector_prune_sensitivity.py recipes/yolox_nano_prune50_distill.yaml \
        --round-to 0 --part dark2 --channel-ratio 0.1 --criteria l2 contribution

For each parameter cut, scope (uniform: one channel ratio per layer; global: one ranking over
the network; isomorphic: global ranking within groups of the same structure) and criterion, a
copy of the recipe's teacher (batch norms calibrated as the pipeline does) is pruned with the
recipe's round_to (or --round-to) and max_layer_ratio, its batch-norm statistics re-estimated as
prune_structured does, and scored: COCO mAP50-95 / mAP50 on held-out fully labelled coco/train
images (never val_dev) and the distillation loss against the teacher on the recipe's held-out
images. With --part only that part is cut, at a fixed channel ratio, the rest left whole.

Images: the first 96 training images (after the recipe's held-out split) set the batch-norm
statistics, the activation statistics and the Taylor gradients; mAP is measured on every other
fully labelled coco/train image (the rest of the training images and the held-out ones), so no
criterion is scored on the images that shaped it. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch_pruning as tp

from robot_compress.compress.detection.coco_eval import coco_map
from robot_compress.compress.detection.data import DetectionImages
from robot_compress.compress.detection.distill import (
    RECALIBRATION_IMAGES,
    recalibrate_batchnorm,
    to_input,
    validation_loss,
)
from robot_compress.compress.detection.distill_loss import distill_loss, head_outputs
from robot_compress.compress.detection.export import NmsSettings
from robot_compress.compress.detection.task import load_detection_splits, prepare_teacher
from robot_compress.compress.detection.yolox_loss import yolox_loss
from robot_compress.compress.models import build_model
from robot_compress.compress.prune_importance import ACTIVATION_CRITERIA, make_importance, measure_inputs
from robot_compress.compress.recipe import load_recipe
from robot_compress.compress.stages.prune_structured import output_layers
from robot_compress.runtime.cpu_info import cpu_description
from robot_compress.runtime.detection import decode_raw, nms, rows_to_detections
from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS, COCO80_NAMES

CRITERIA = ("l2", "l1", "bn_scale", "lamp", "folded", "activation", "contribution", "taylor_distill",
            "taylor_label")
TAYLOR_BATCHES = 6  # x 16 images


def held_out_map_set(splits, size: int) -> tuple[np.ndarray, dict]:
    """Letterboxed fully labelled images not used for statistics, and their COCO ground truth."""
    train_rest = splits.train.subset(range(RECALIBRATION_IMAGES, len(splits.train)))
    images, annotations, entries = [], [], []
    for part in (train_rest, splits.val):
        labelled = part.subset(part.labelled)
        images.append(labelled.letterboxed(size))
        for entry, boxes in zip(labelled.entries, labelled.letterboxed_boxes(size), strict=True):
            entries.append({"id": entry["id"], "width": size, "height": size, "file_name": entry["file_name"]})
            for row in boxes:
                w, h = float(row[3] - row[1]), float(row[4] - row[2])
                annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], "iscrowd": 0,
                                    "category_id": COCO80_CATEGORY_IDS[int(row[0])],
                                    "bbox": [float(row[1]), float(row[2]), w, h], "area": w * h})
    truth = {"images": entries, "annotations": annotations,
             "categories": [{"id": i, "name": n} for i, n in zip(COCO80_CATEGORY_IDS, COCO80_NAMES, strict=True)]}
    return np.concatenate(images), truth


@torch.no_grad()
def torch_map(model, images: np.ndarray, truth: dict, size: int) -> tuple[float, float]:
    settings = NmsSettings()
    model.eval()
    found = {}
    ids = [e["id"] for e in truth["images"]]
    for start in range(0, len(images), 16):
        raw = model(to_input(images[start:start + 16], torch.device("cpu"))).numpy()
        for k, head in enumerate(raw):
            boxes, scores, classes = decode_raw(head, size)
            rows = nms(boxes, scores, classes, settings.score_threshold, settings.iou_threshold, settings.max_det)
            found[ids[start + k]] = rows_to_detections(rows, list(COCO80_NAMES))
    return coco_map(truth, found, list(COCO80_CATEGORY_IDS))


def taylor_gradients(model, teacher, stats: np.ndarray, boxes, source: str, size: int) -> None:
    """Accumulate the loss gradient on the statistics images into model's .grad (GroupTaylor reads it).

    `distill`: the distillation loss against the teacher with the student in training mode (batch
    statistics; in eval mode the unpruned student equals the teacher and the gradient is zero).
    `label`: YOLOX's label loss on the labelled statistics images, eval mode."""
    model.zero_grad()
    for start in range(0, min(len(stats), 16 * TAYLOR_BATCHES), 16):
        x = to_input(stats[start:start + 16], torch.device("cpu"))
        if source == "distill":
            model.train()
            with torch.no_grad():
                t_levels = head_outputs(teacher.eval(), x)[1]
            loss, _ = distill_loss(head_outputs(model, x)[1], t_levels)
        else:
            model.eval()
            targets = boxes[start:start + 16]
            if all(t is None for t in targets):
                continue
            loss, _ = yolox_loss(head_outputs(model, x)[1], targets)
        loss.backward()
    model.eval()


def scored_copy(name: str, teacher, stats: np.ndarray, boxes, size: int):
    """A copy of the teacher carrying what `name` ranks by (activation statistics or gradients);
    deep copies of it carry them too, so the ratio search re-uses one measurement."""
    model = copy.deepcopy(teacher)
    if name.startswith("taylor_"):
        taylor_gradients(model, teacher, stats, boxes, name.removeprefix("taylor_"), size)
    elif name in ACTIVATION_CRITERIA:
        measure_inputs(model, [to_input(stats[i:i + 16], torch.device("cpu")) for i in range(0, len(stats), 16)])
    return model


PARTS = ("stem", "dark2", "dark3", "dark4", "dark5", "neck", "head")


def part_modules(model, part: str) -> list:
    if part == "neck":
        return [module for name, module in model.backbone.named_children() if name != "backbone"]
    if part == "head":
        return [model.head]
    return [getattr(model.backbone.backbone, part)]


def pruned(scored, name: str, scope: str, channel_ratio: float, prune, size: int, part: str | None = None):
    """A pruned copy of `scored`; with `part`, every other part is left whole."""
    model = copy.deepcopy(scored)
    for mine, theirs in zip(model.parameters(), scored.parameters(), strict=True):  # deepcopy drops .grad
        mine.grad = None if theirs.grad is None else theirs.grad.clone()
    importance = tp.importance.GroupTaylorImportance() if name.startswith("taylor_") else make_importance(name, model)
    tp.pruner.MetaPruner(model, torch.zeros(1, 3, size, size), importance=importance,
                         global_pruning=scope != "uniform", isomorphic=scope == "isomorphic",
                         pruning_ratio=channel_ratio, max_pruning_ratio=prune.max_layer_ratio,
                         ignored_layers=output_layers(model) + [m for other in PARTS if part and other != part
                                                                for m in part_modules(model, other)],
                         round_to=prune.round_to).step()
    model.zero_grad(set_to_none=True)
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def ratio_for(scored, name, scope, cut, prune, size) -> tuple[float, object]:
    """Bisection on the channel ratio for `cut` of the parameters, per criterion (the count a
    channel ratio gives can depend on the scores)."""
    goal = (1 - cut) * n_params(scored)
    low, high, best = 0.0, prune.max_layer_ratio, None
    for _ in range(8):
        middle = (low + high) / 2
        model = pruned(scored, name, scope, middle, prune, size)
        if n_params(model) > goal:
            low = middle
        else:
            high, best = middle, model
    if best is None:
        best = pruned(scored, name, scope, high, prune, size)
    return high, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--cuts", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--scopes", nargs="+", default=["uniform"], choices=["uniform", "global", "isomorphic"])
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    parser.add_argument("--round-to", type=int, default=None, help="instead of the recipe's (0: none)")
    parser.add_argument("--part", choices=PARTS, help="prune only this part at --channel-ratio")
    parser.add_argument("--channel-ratio", type=float, default=0.1, help="with --part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=Path("runs/detector_prune_sensitivity.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    prune = next(stage for stage in recipe.stages if stage.name == "prune_structured")
    if args.round_to is not None:
        prune = prune.model_copy(update={"round_to": args.round_to or None})
    teacher = build_model(recipe.teacher)
    splits = load_detection_splits(recipe.data, recipe.seed)
    prepare_teacher(teacher, splits)
    size = recipe.data.input_size[0]
    val = splits.val.letterboxed(size)
    first: DetectionImages = splits.train.subset(range(RECALIBRATION_IMAGES))
    stats, boxes = first.letterboxed(size), first.letterboxed_boxes(size)
    statistics_images = to_input(stats, torch.device("cpu"))
    images, truth = held_out_map_set(splits, size)
    print(f"mAP on {len(images)} held-out labelled coco/train images ({len(truth['annotations'])} boxes); "
          f"statistics from {len(stats)} others; round_to {prune.round_to}", flush=True)
    start = time.time()
    base = torch_map(teacher, images, truth, size)
    rows = [{"cut": 0.0, "scope": "-", "criterion": "none (teacher)", "params": n_params(teacher),
             "map50_95": base[0], "map50": base[1], "loss": validation_loss(teacher, teacher, val)}]
    print(f"teacher: {rows[0]['params']:,} params, mAP {base[0]:.1f} / {base[1]:.1f} ({time.time() - start:.0f} s)",
          flush=True)
    result = {"recipe": str(args.recipe), "map_images": len(images), "statistics_images": len(stats),
              "val_images": len(splits.val), "round_to": prune.round_to, "threads": args.threads,
              "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name in args.criteria:
        scored = scored_copy(name, teacher, stats, boxes, size)
        for cut in args.cuts:
            for scope in args.scopes:
                start = time.time()
                try:
                    if args.part:
                        ratio, model = args.channel_ratio, pruned(scored, name, scope, args.channel_ratio, prune,
                                                                  size, args.part)
                    else:
                        ratio, model = ratio_for(scored, name, scope, cut, prune, size)
                except Exception as exc:  # a criterion that cannot reach the cut is a row, not a crash
                    print(f"{cut:.0%} {scope} {name}: failed ({exc})", flush=True)
                    rows.append({"cut": cut, "scope": scope, "criterion": name, "error": str(exc)})
                    continue
                recalibrate_batchnorm(model, statistics_images)
                score = torch_map(model, images, truth, size)
                rows.append({"cut": cut, "scope": scope, "criterion": name, "channel_ratio": ratio,
                             "params": n_params(model), "params_removed": 1 - n_params(model) / rows[0]["params"],
                             "map50_95": score[0], "map50": score[1], "loss": validation_loss(model, teacher, val),
                             "seconds": time.time() - start})
                r = rows[-1]
                print(f"{cut:.0%} {scope:10s} {name:15s} ratio {ratio:.3f}: {r['params']:>8,} params "
                      f"(-{r['params_removed']:.1%}), mAP {score[0]:5.2f} / {score[1]:5.2f}, loss {r['loss']:.2f} "
                      f"({r['seconds']:.0f} s)", flush=True)
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
