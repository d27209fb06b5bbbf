"""The detector's label loss: boxes carried through the augmentation, YOLOX's SimOTA loss, the
alpha mix in `robot-compress compress`, and recipes whose training images have no usable labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robot_compress.compress.detection.data import (
    Augment,
    DetectionImages,
    augmented_with_boxes,
    load_detection_images,
)
from robot_compress.compress.detection.objective import check_labels
from robot_compress.compress.detection.yolox import yolox_nano
from robot_compress.compress.detection.yolox_loss import decode, flatten_levels, simota_assign, yolox_loss
from robot_compress.compress.recipe import Distill, RecipeError, parse_recipe

SIZE = 160
COLOURS = {0: (0, 0, 255), 1: (255, 0, 0)}  # BGR red -> class 0, blue -> class 1


def rectangle_images() -> DetectionImages:
    """Grey images, each with one red or blue rectangle and its box (class 0 red, 1 blue)."""
    images, boxes = [], []
    for k, (h, w, x1, y1, x2, y2) in enumerate([(120, 200, 30, 20, 110, 90), (200, 150, 10, 60, 90, 190),
                                                  (160, 160, 60, 40, 150, 120), (90, 140, 5, 5, 60, 80)]):
        image = np.full((h, w, 3), 114, np.uint8)
        image[y1:y2, x1:x2] = COLOURS[k % 2]
        images.append(image)
        boxes.append(np.array([[k % 2, x1, y1, x2, y2]], np.float32))
    return DetectionImages(Path("."), [{"id": k} for k in range(4)], images, boxes)


def colour_mask(image: np.ndarray, cls: int) -> np.ndarray:
    colour = np.array(COLOURS[cls])
    return (np.abs(image.astype(int) - colour).max(axis=2) < 60)


@pytest.mark.parametrize("config", [
    Augment(hsv=(0, 0, 0)),  # mosaic, scale, rotation, shear, translation, flip
    Augment(mosaic=0.0, degrees=0.0, shear=0.0, hsv=(0, 0, 0)),
])
def test_augmented_boxes_cover_the_same_object(config):
    data = rectangle_images()
    seen = 0
    for seed in range(12):
        image, boxes = augmented_with_boxes(data, seed % 4, SIZE, np.random.default_rng(seed), config)
        assert image.shape == (SIZE, SIZE, 3) and boxes.shape[1] == 5
        for cls in (0, 1):
            mask = colour_mask(image, cls)
            own = boxes[boxes[:, 0] == cls]
            covered = np.zeros_like(mask)
            for _, x1, y1, x2, y2 in own:
                assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
                region = mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))]
                assert region.mean() > 0.5  # the box is mostly its object (a warped hull is a little larger)
                covered[max(0, int(y1) - 2):int(np.ceil(y2)) + 2, max(0, int(x1) - 2):int(np.ceil(x2)) + 2] = True
                seen += 1
            assert (mask & ~covered).sum() <= 25  # every visible object pixel lies in a box of its class
    assert seen >= 12


def test_letterboxed_boxes_follow_the_letterbox():
    data = rectangle_images()
    image = data.letterboxed(SIZE, 1)[0]
    (cls, x1, y1, x2, y2), = data.letterboxed_boxes(SIZE, 1)[0]
    ys, xs = np.nonzero(colour_mask(image, int(cls)))
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
    assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1


def test_only_fully_labelled_images_carry_boxes_in_coco80_order(shared_data):
    folder = shared_data / "coco" / "train"
    data = load_detection_images(folder, 320)
    statuses = [e["label_status"] for e in data.entries]
    assert all((b is not None) == (s in ("official_full", "converted_yolo")) for b, s in zip(data.boxes, statuses,
                                                                                           strict=True))
    assert sum(b is None for b in data.boxes) == sum(s.startswith("partial") or s == "none" for s in statuses) > 0
    instances = json.loads((folder / "instances.json").read_text())
    first = next(i for i, b in enumerate(data.boxes) if b is not None and len(b))
    entry = data.entries[first]
    original = [a for a in instances["annotations"] if a["image_id"] == entry["id"] and not a["iscrowd"]]
    from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS
    assert sorted(data.boxes[first][:, 0].astype(int)) == sorted(COCO80_CATEGORY_IDS.index(a["category_id"])
                                                                 for a in original)
    scale = data.images[first].shape[1] / entry["width"]
    assert np.allclose(data.boxes[first][0, 3] - data.boxes[first][0, 1],
                       [a["bbox"][2] * scale for a in original][0], atol=1e-3)


def levels_for(model, image: np.ndarray):
    x = torch.from_numpy(image[None]).permute(0, 3, 1, 2).float()
    return model.head.forward_levels(model.backbone(x))


def test_simota_picks_cells_inside_the_box():
    torch.manual_seed(0)
    levels = [(torch.randn(1, 4, n, n) * 0.1, torch.randn(1, 1, n, n), torch.randn(1, 80, n, n))
              for n in (SIZE // 8, SIZE // 16, SIZE // 32)]
    raw, obj, cls, grid, stride = flatten_levels(levels)
    gt = torch.tensor([[60.0, 70.0, 80.0, 64.0]])  # centre x, y, width, height
    positive, gt_index, ious = simota_assign(gt, torch.tensor([3]), decode(raw[0], grid, stride), obj[0], cls[0],
                                             grid, stride)
    assert 1 <= positive.sum() <= 10 and (gt_index == 0).all() and ((ious >= 0) & (ious <= 1)).all()
    centres = (grid[positive] + 0.5) * stride[positive]
    assert ((centres[:, 0] > 20) & (centres[:, 0] < 100) & (centres[:, 1] > 38) & (centres[:, 1] < 102)).all()


def test_an_image_without_boxes_gives_only_the_objectness_loss_and_unlabelled_images_none():
    model = yolox_nano().eval()
    image = np.full((SIZE, SIZE, 3), 114, np.uint8)
    loss, parts = yolox_loss(levels_for(model, image), [np.zeros((0, 5), np.float32)])
    assert torch.isfinite(loss) and parts["obj"] > 0 and parts["box"] == 0 and parts["cls"] == 0
    loss, parts = yolox_loss(levels_for(model, image), [None])
    assert float(loss.detach()) == 0 and loss.requires_grad  # still backpropagates (a zero gradient)


def test_a_few_steps_on_one_image_lower_the_loss():
    torch.manual_seed(0)
    model = yolox_nano().train()
    for conv in [*model.head.obj_preds, *model.head.cls_preds]:  # YOLOX's initial 1% score prior
        torch.nn.init.constant_(conv.bias, -float(np.log(99)))
    image = rectangle_images().letterboxed(SIZE, 1)
    boxes = rectangle_images().letterboxed_boxes(SIZE, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, parts = yolox_loss(levels_for(model, image[0]), boxes)
        assert torch.isfinite(loss) and all(np.isfinite(v) for v in parts.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0] and min(losses[-3:]) < min(losses[:3])


def test_a_label_loss_without_labelled_training_images_is_refused(tmp_path, shared_data):
    unlabelled = DetectionImages(Path("x"), [{"id": 1, "label_status": "none"}], [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="none of the 1 training images"):
        check_labels(Distill(alpha=0.5), unlabelled)
    check_labels(Distill(alpha=1.0), unlabelled)  # distillation needs no labels
    folder = tmp_path / "coco"
    (folder / "images").mkdir(parents=True)
    (folder / "instances.json").write_text(json.dumps({"images": [
        {"id": 1, "file_name": "a.jpg", "label_status": "partial_categories(1:person)"},
        {"id": 2, "file_name": "b.jpg", "label_status": "none"}], "annotations": [], "categories": []}))
    data = {"name": "d", "teacher": {"kind": "yolox", "arch": "yolox_nano",
                                     "checkpoint": str(shared_data / "weights" / "yolox_nano-e8af0749.onnx")},
            "data": {"train": str(folder), "eval": str(shared_data / "coco" / "val_dev"), "val_size": 1},
            "stages": [{"stage": "distill", "epochs": 1, "alpha": 0.0}]}
    with pytest.raises(RecipeError, match=r"alpha: 0.0 mixes in the YOLOX label loss.*no fully labelled image"):
        parse_recipe(data)
    data["stages"][0]["alpha"] = 1.0
    parse_recipe(data)


def test_a_recipe_mixing_distillation_and_labels_runs_end_to_end(tmp_path, shared_data):
    recipe = {"name": "tiny_mixed", "seed": 0,
              "teacher": {"kind": "yolox", "arch": "yolox_nano",
                          "checkpoint": str(shared_data / "weights" / "yolox_nano-e8af0749.onnx")},
              "data": {"train": str(shared_data / "coco" / "train"), "eval": str(shared_data / "coco" / "val_dev"),
                       "train_limit": 12, "val_size": 4, "eval_limit": 4, "batch_size": 4,
                       "input_size": [SIZE, SIZE]},
              "metrics": {"latency_runs": 3, "latency_warmup": 1, "latency_threads": [1]},
              "stages": [{"stage": "prune_structured", "ratio": 0.25},
                         {"stage": "distill", "epochs": 1, "lr": 0.002, "alpha": 0.5},
                         {"stage": "export_onnx"}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out, work = tmp_path / "models" / "tiny_mixed", tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "robot_compress.cli", "compress", str(path), "--out", str(out),
                             "--work-dir", str(work), "--threads", "1"], capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mAP50-95" in result.stdout
    history = json.loads((work / "02_distill" / "metrics.json").read_text())["history"]
    assert len(history) == 1
    assert {"loss_obj", "loss_cls", "loss_box", "loss_label_obj", "loss_label_cls", "loss_label_box"} <= set(history[0])
    assert history[0]["loss_label_box"] > 0 and np.isfinite(history[0]["loss"])
    assert history[0]["val_label_loss"] is None or np.isfinite(history[0]["val_label_loss"])


def test_the_best_epoch_is_picked_by_the_held_out_label_loss_where_there_are_labels(shared_data):
    from robot_compress.compress.detection.objective import held_out_losses
    from robot_compress.compress.detection.yolox import yolox_nano_from_onnx

    teacher = yolox_nano_from_onnx(shared_data / "weights" / "yolox_nano-e8af0749.onnx").eval()
    val = load_detection_images(shared_data / "coco" / "train", SIZE, limit=3)
    assert len(val.labelled) == 3
    held = held_out_losses(teacher, teacher, val, val.letterboxed(SIZE), SIZE)
    assert held["selected_by"] == "label" and held["val_selected"] == held["val_label_loss"] > 0
    assert held["val_loss"] > 0  # the teacher against itself: the soft targets' own entropy
    unlabelled = val.subset([0, 1, 2])
    unlabelled.boxes = [None] * 3
    held = held_out_losses(teacher, teacher, unlabelled, unlabelled.letterboxed(SIZE), SIZE)
    assert held["selected_by"] == "distillation" and held["val_label_loss"] is None
    assert held["val_selected"] == held["val_loss"]
