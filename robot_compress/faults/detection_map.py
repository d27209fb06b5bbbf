"""COCO mAP of a detection run's published results, per backend, from the run's records.

Each result is joined to sim_camera's ground truth by camera stamp; the truth names the COCO image
and the scale it was fitted into the frame at, so boxes go back to the annotation's pixels. A run
streams the images in a loop, so an image can be answered several times: each group (edge, local,
all) keeps the first answer it has for each image, and is scored on those images only. Needs
pycocotools (the `compress` extra).
"""

from __future__ import annotations

from pathlib import Path

from robot_compress.faults.analysis import frame_key


def run_map(records: list[dict], annotations: Path, category_ids: list[int]) -> dict[str, dict]:
    """{"all" | "edge" | "local": {"map50_95", "map50", "images"}} (None figures for a group with no answer)."""
    from robot_compress.compress.detection.coco_eval import coco_map
    from robot_compress.runtime.detection import Detection

    truth = {frame_key(r): r for r in records if r["kind"] == "truth" and "image_id" in r}
    groups: dict[str, dict[int, list]] = {"all": {}, "edge": {}, "local": {}}
    for record in records:
        if record["kind"] != "result" or record.get("detections") is None or frame_key(record) not in truth:
            continue
        frame = truth[frame_key(record)]
        scale = frame["scale"]
        found = [Detection(*(v / scale for v in d["box"]), d["score"], d["class_id"], d["label"])
                 for d in record["detections"]]
        for name in ("all", record["backend"]):
            if name in groups:
                groups[name].setdefault(frame["image_id"], found)
    out = {}
    for name, answered in groups.items():
        map50_95, map50 = coco_map(annotations, answered, category_ids) if answered else (None, None)
        out[name] = {"map50_95": map50_95, "map50": map50, "images": len(answered)}
    return out
