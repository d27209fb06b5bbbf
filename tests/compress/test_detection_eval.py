"""COCO evaluation of a detection model directory through the robot's own preprocessing."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from robot_compress.cli import main
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


def test_detect_command_prints_boxes_and_writes_the_drawn_image(detector_dir, val_dev, tmp_path, capsys):
    image = val_dev / "images" / "000000000139.jpg"
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    code = main(["detect", "--model", str(detector_dir), "--out-dir", str(tmp_path / "out"), str(image), str(corrupt)])
    out = capsys.readouterr()
    assert code == 1, "one of the two images failed"
    assert "corrupt.jpg: error: could not decode" in out.err
    assert "000000000139.jpg: " in out.out and " tv " in out.out  # the television fills the left of this frame
    drawn = cv2.imread(str(tmp_path / "out" / "000000000139_detections.png"))
    original = cv2.imread(str(image))
    assert drawn.shape == original.shape and not np.array_equal(drawn, original)


def test_detect_command_refuses_a_classifier(capsys):
    assert main(["detect", "--model", str(SMALL_MODEL), str(SMALL_MODEL / "manifest.json")]) == 2
    assert "is a classification model; detect needs a detection model" in capsys.readouterr().err
