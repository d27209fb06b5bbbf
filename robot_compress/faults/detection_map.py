"""COCO mAP of a detection run's published results, per backend, from the run's records.

Each result is joined to the camera's ground truth by camera stamp. Two cameras give truth:
- sim_camera (`run_map`): the truth names the COCO image and the scale it was fitted into the frame at,
  so boxes go back to the annotation's pixels. A run streams the images in a loop, so an image can be
  answered several times: each group (edge, local, all) keeps the first answer it has for each image,
  and is scored on those images only.
- sim_world (`sim_map`): every frame is its own image, with the boxes sim_world published for it (the
  picture boards' boxes as the camera sees them, hidden ones dropped and partly hidden ones trimmed by
  its segmentation pass). A frame without boxes still counts: a box found there is a false positive.
Needs pycocotools (the `compress` extra).
"""

from __future__ import annotations

from pathlib import Path

from robot_compress.faults.analysis import frame_key

GROUPS = ("all", "edge", "local")
SMALL_AREA, MEDIUM_AREA = 32 * 32, 96 * 96  # COCO's size classes ("small" below the first), in frame pixels


def run_map(records: list[dict], annotations: Path, category_ids: list[int]) -> dict[str, dict]:
    """{"all" | "edge" | "local": {"map50_95", "map50", "images"}} (None figures for a group with no answer)."""
    truth = {frame_key(r): r for r in records if r["kind"] == "truth" and "image_id" in r}
    return _score(_grouped(records, truth, lambda frame: (frame["image_id"], frame["scale"])), annotations,
                  category_ids)


def sim_map(records: list[dict], category_ids: list[int]) -> dict[str, dict]:
    """As `run_map`, scored against sim_world's per-frame boxes (truth records with `boxes`)."""
    truth = {frame_key(r): r for r in records if r["kind"] == "truth" and "boxes" in r}
    has_result = {frame_key(r) for r in records if r["kind"] == "result" and r.get("detections") is not None}
    dataset = sim_truth_dataset([frame for key, frame in truth.items() if key in has_result], category_ids)
    groups = _grouped(records, truth, lambda frame: (frame["index"], 1.0))
    scores = _score(groups, dataset, category_ids)
    for name, answered in groups.items():  # how much there was to find in the frames each group answered
        mine = [a for a in dataset["annotations"] if a["image_id"] in answered]
        scores[name]["boxes"] = len(mine)
        scores[name]["small_boxes"] = sum(a["area"] < SMALL_AREA for a in mine)
    return scores


def sim_truth_dataset(frames: list[dict], category_ids: list[int]) -> dict:
    """COCO ground truth (pycocotools' dataset dict) from sim_world's truth frames: each with its
    `index` (the image id), `width`, `height` and `boxes` (TruthBox.as_dict(): x0, y0, x1, y1 `bbox`)."""
    dataset: dict = {"images": [], "annotations": [], "categories": [{"id": c} for c in category_ids]}
    for frame in frames:
        dataset["images"].append({"id": frame["index"], "width": frame["width"], "height": frame["height"]})
        for box in frame["boxes"]:
            x0, y0, x1, y1 = box["bbox"]
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": frame["index"], "category_id": box["category_id"],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    return dataset


def _grouped(records: list[dict], truth: dict, image_of) -> dict[str, dict[int, list]]:
    """Per group, image id -> the first answer's detections in the truth's pixels."""
    from robot_compress.runtime.detection import Detection

    groups: dict[str, dict[int, list]] = {name: {} for name in GROUPS}
    for record in records:
        if record["kind"] != "result" or record.get("detections") is None or frame_key(record) not in truth:
            continue
        image_id, scale = image_of(truth[frame_key(record)])
        found = [Detection(*(v / scale for v in d["box"]), d["score"], d["class_id"], d["label"])
                 for d in record["detections"]]
        for name in ("all", record["backend"]):
            if name in groups:
                groups[name].setdefault(image_id, found)
    return groups


def _score(groups: dict[str, dict[int, list]], annotations: Path | dict, category_ids: list[int]) -> dict[str, dict]:
    from robot_compress.compress.detection.coco_eval import coco_map

    out = {}
    for name, answered in groups.items():
        map50_95, map50 = coco_map(annotations, answered, category_ids) if answered else (None, None)
        out[name] = {"map50_95": map50_95, "map50": map50, "images": len(answered)}
    return out
