"""COCO evaluation of a detection model directory through the robot's own preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_compress.compress.detection.coco_eval import coco_map, evaluate_folder
from robot_compress.runtime.detection import Detection, detect
from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS
from robot_compress.runtime.errors import ImageError
from robot_compress.runtime.local_backend import LocalBackend
from tests.conftest import SMALL_MODEL


@pytest.fixture(scope="module")
def val_dev(shared_data):
    return shared_data / "coco" / "val_dev"


def test_ground_truth_boxes_score_100_and_shifted_ones_less(val_dev):
    data = json.loads((val_dev / "instances.json").read_text())
    index = {cat: i for i, cat in enumerate(COCO80_CATEGORY_IDS)}
    images = [img["id"] for img in data["images"][:6]]
    truth = {i: [] for i in images}
    for ann in data["annotations"]:
        if ann["image_id"] in truth and not ann["iscrowd"]:
            x, y, w, h = ann["bbox"]
            truth[ann["image_id"]].append(Detection(x, y, x + w, y + h, 1.0, index[ann["category_id"]], ""))
    perfect = coco_map(val_dev / "instances.json", truth, list(COCO80_CATEGORY_IDS))
    assert perfect == pytest.approx((100.0, 100.0))
    shifted = {i: [Detection(d.x1 + 0.3 * (d.x2 - d.x1), d.y1, d.x2 + 0.3 * (d.x2 - d.x1), d.y2, 1.0,
                             d.class_id, "") for d in found] for i, found in truth.items()}
    map50_95, map50 = coco_map(val_dev / "instances.json", shifted, list(COCO80_CATEGORY_IDS))
    assert map50_95 < 60 and map50 > 90  # IoU 0.54: matched at 0.5, not at the stricter thresholds


def test_the_converted_detector_finds_coco_objects(detector_dir, val_dev):
    backend = LocalBackend(detector_dir, threads=1)
    score = evaluate_folder(val_dev, lambda image: detect(backend, [image], score_threshold=0.0)[0],
                            backend.manifest.detection.category_ids, limit=12)
    print(f"mAP50-95 {score.map50_95:.1f}, mAP50 {score.map50:.1f} on the first 12 val_dev images at 320")
    assert score.images == 12
    assert 10 < score.map50_95 < score.map50


def test_detect_refuses_a_classifier():
    backend = LocalBackend(SMALL_MODEL)
    with pytest.raises(ImageError, match="classification model, not a detection model"):
        detect(backend, [np.zeros((32, 32, 3), np.uint8)])
