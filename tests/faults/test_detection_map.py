"""mAP per backend from a detection run's records: joined by stamp, boxes back to annotation pixels."""

from __future__ import annotations

import json

import pytest

from robot_compress.faults.detection_map import run_map, sim_map
from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS


def test_ground_truth_answers_score_100_and_each_image_counts_once(shared_data):
    annotations = shared_data / "coco" / "val_dev" / "instances.json"
    data = json.loads(annotations.read_text())
    index = {cat: i for i, cat in enumerate(COCO80_CATEGORY_IDS)}
    images = [i["id"] for i in data["images"][:4]]
    records = []
    for n, image_id in enumerate([*images, images[0]]):  # the first image streamed twice
        scale = 0.5 if n % 2 else 1.0  # the frame's pixels per annotation pixel
        stamp = {"sec": n, "nanosec": 0}
        boxes = [a for a in data["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        found = [{"box": [v * scale for v in (x, y, x + w, y + h)], "score": 1.0,
                  "class_id": index[a["category_id"]], "label": ""} for a in boxes for x, y, w, h in [a["bbox"]]]
        if n == 4:
            found = []  # the repeat answers nothing: only the first answer of an image counts
        records.append({"kind": "truth", "stamp": stamp, "image_id": image_id, "scale": scale, "class_id": -1})
        records.append({"kind": "result", "stamp": stamp, "backend": "edge" if n < 2 else "local",
                        "detections": found})
    scores = run_map(records, annotations, list(COCO80_CATEGORY_IDS))
    assert scores["all"]["images"] == 4 and scores["edge"]["images"] == 2 and scores["local"]["images"] == 3
    assert scores["all"]["map50_95"] == pytest.approx(100.0) and scores["edge"]["map50_95"] == pytest.approx(100.0)
    assert scores["local"]["map50_95"] < 100.0  # its answer for the repeated image was empty


def _sim_truth(index: int, boxes: list[tuple[int, list[float]]]) -> dict:
    """A sim_world ground-truth record: its boxes as (COCO category id, [x0, y0, x1, y1]) in frame pixels."""
    return {"kind": "truth", "stamp": {"sec": 100, "nanosec": index}, "index": index, "width": 320, "height": 240,
            "class_id": -1, "label": "", "boxes": [{"category_id": c, "bbox": b, "visible": 1.0} for c, b in boxes]}


def test_sim_world_frames_are_scored_against_their_own_boxes_and_empty_frames_count():
    index = {cat: i for i, cat in enumerate(COCO80_CATEGORY_IDS)}
    person, dog = [10.0, 20.0, 60.0, 140.0], [150.0, 100.0, 230.0, 170.0]
    frames = [_sim_truth(0, [(1, person), (18, dog)]), _sim_truth(1, [(18, dog)]), _sim_truth(2, [])]

    def found(*boxes, score=0.9):
        return [{"box": b, "score": score, "class_id": index[c], "label": ""} for c, b in boxes]

    # A surer dog where the frame shows none: a false positive ranked above the true dog.
    results = [(found((1, person), (18, dog)), "edge"), (found((18, dog)), "local"),
               (found((18, dog), score=0.95), "local")]
    records = [*frames, *({"kind": "result", "stamp": f["stamp"], "backend": backend, "detections": d}
                          for f, (d, backend) in zip(frames, results, strict=True))]
    records.append({"kind": "truth", **_sim_truth(3, [(1, person)])})  # never answered: not scored
    scores = sim_map(records, list(COCO80_CATEGORY_IDS))
    assert scores["all"]["images"] == 3 and scores["edge"]["images"] == 1 and scores["local"]["images"] == 2
    assert scores["all"]["boxes"] == 3 and scores["local"]["boxes"] == 1
    assert scores["all"]["small_boxes"] == 0  # 50x120 and 80x70 pixels
    assert scores["edge"]["map50_95"] == pytest.approx(100.0)
    assert scores["local"]["map50_95"] == pytest.approx(50.0)  # dog: precision 1/2 at its only recall
    assert scores["all"]["map50_95"] == pytest.approx((100.0 + 100.0 * 2 / 3) / 2)  # person, dog


def test_local_latency_of_a_detector_is_timed_on_coco_photos():
    """The black-hole bound's local p99 for a detector: letterbox, inference and box mapping."""
    from robot_compress.faults.experiment import DETECTION_LOCAL_MODEL, DETECTION_SOURCE, local_latency_ms

    p50, p99 = local_latency_ms(DETECTION_LOCAL_MODEL, DETECTION_SOURCE, frames=6)
    assert 0 < p50 <= p99
