"""COCO mAP of a detector on a COCO-format folder (images/ + instances.json), with pycocotools.

Images go through `runtime.detection.detect`, the robot's own letterbox and box mapping, so the
figure measures what the robot would see. Offline only: pycocotools comes with the `compress` extra.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from robot_compress.runtime.detection import Detection


@dataclass(frozen=True)
class CocoScore:
    map50_95: float  # percent, as papers report it
    map50: float
    images: int
    seconds: float


def coco_images(folder: Path) -> list[dict]:
    """The `images` entries of folder/instances.json, in file order."""
    return json.loads((Path(folder) / "instances.json").read_text())["images"]


def coco_map(annotations: Path | dict, detections: dict[int, list[Detection]],
             category_ids: list[int]) -> tuple[float, float]:
    """(mAP50-95, mAP50) in percent, scoring only the images in `detections`. `annotations` is an
    instances.json file or the same content as a dict (ground truth made on the fly, e.g. a simulator's)."""
    stats = coco_stats(annotations, detections, category_ids)
    return stats["map50_95"], stats["map50"]


COCO_STATS = {"map50_95": 0, "map50": 1, "map_small": 3, "map_medium": 4, "map_large": 5}  # name -> stats index


def coco_stats(annotations: Path | dict, detections: dict[int, list[Detection]],
               category_ids: list[int]) -> dict[str, float | None]:
    """pycocotools' summary as {COCO_STATS name: percent}, scoring only the images in `detections`;
    None for a size class with no ground-truth box in those images."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = [{"image_id": image_id, "category_id": category_ids[d.class_id],
                "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1], "score": d.score}
               for image_id, found in detections.items() for d in found]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        if isinstance(annotations, dict):
            truth = COCO()
            truth.dataset = annotations
            truth.createIndex()
        else:
            truth = COCO(str(annotations))
        if not results:
            return dict.fromkeys(COCO_STATS, 0.0)
        evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluator.params.imgIds = sorted(detections)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools writes -1 where there was nothing to score
    return {name: 100.0 * float(evaluator.stats[i]) if evaluator.stats[i] >= 0 else None
            for name, i in COCO_STATS.items()}


def evaluate_folder(folder: Path, run: Callable[[np.ndarray], list[Detection]], category_ids: list[int],
                    limit: int | None = None) -> CocoScore:
    """Run `run(bgr_image)` on each image of a COCO folder and score the answers."""
    folder = Path(folder)
    entries = coco_images(folder)[:limit]
    found: dict[int, list[Detection]] = {}
    start = time.perf_counter()
    for entry in entries:
        image = cv2.imread(str(folder / "images" / entry["file_name"]))
        if image is None:
            raise FileNotFoundError(f"{folder / 'images' / entry['file_name']} is missing or not an image")
        found[entry["id"]] = run(image)
    seconds = time.perf_counter() - start
    map50_95, map50 = coco_map(folder / "instances.json", found, category_ids)
    return CocoScore(map50_95, map50, len(entries), seconds)
