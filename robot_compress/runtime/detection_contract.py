"""The detection part of the model contract: the manifest's `detection` section.

A detection model takes the letterboxed uint8 image (N x S x S x 3, the model's channel order)
and answers with [N, max_detections, 6] rows (x1, y1, x2, y2 in letterboxed input pixels,
score, class index), best first, padding rows all zero. Decode and NMS run inside the graph;
`nms_score_threshold`, `iou_threshold` and `max_detections` record what the graph bakes in, and
`score_threshold` is the default a client applies before showing or publishing a box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robot_compress.runtime.errors import ManifestError

TASKS = ("classification", "detection")
RESIZE_MODES = ("letterbox",)
OUTPUT_FIELDS = ["x1", "y1", "x2", "y2", "score", "class"]
BOX_UNITS = ("input_pixels",)

COCO80_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# The official COCO category id of each of the 80 classes, in the same order (ids 1-90 with gaps).
COCO80_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


@dataclass(frozen=True)
class DetectionSpec:
    """How to feed a detection model and read its answer (manifest.json `detection`)."""

    score_threshold: float
    nms_score_threshold: float
    iou_threshold: float
    max_detections: int
    resize: str = "letterbox"
    pad_value: int = 114
    output_fields: list[str] = field(default_factory=lambda: list(OUTPUT_FIELDS))
    box_units: str = "input_pixels"
    category_ids: list[int] = field(default_factory=list)  # dataset ids per class index, for COCO evaluation


def read_detection(r: Any, labels: list[str]) -> DetectionSpec:
    """Validate the `detection` section; `r` is model_contract's field reader positioned on it."""
    thresholds = {}
    for key in ("score_threshold", "nms_score_threshold", "iou_threshold"):
        value = float(r.get(key, (int, float)))
        if not 0.0 <= value <= 1.0:
            raise ManifestError(f"{r.where}: field '{r.prefix}{key}' must be between 0 and 1, got {value}")
        thresholds[key] = value
    max_det = r.get("max_detections", int)
    if max_det < 1:
        raise ManifestError(f"{r.where}: field '{r.prefix}max_detections' must be >= 1, got {max_det}")
    pad = r.get("pad_value", int, default=114)
    if not 0 <= pad <= 255:
        raise ManifestError(f"{r.where}: field '{r.prefix}pad_value' must be 0-255, got {pad}")
    fields = r.get("output_fields", list, default=list(OUTPUT_FIELDS))
    if fields != OUTPUT_FIELDS:
        raise ManifestError(f"{r.where}: field '{r.prefix}output_fields' must be {OUTPUT_FIELDS}, got {fields!r:.80}")
    category_ids = r.get("category_ids", list, default=[])
    if category_ids and (len(category_ids) != len(labels) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in category_ids)):
        raise ManifestError(f"{r.where}: field '{r.prefix}category_ids' must be {len(labels)} integers "
                            f"(one per label), got {len(category_ids)} entries")
    return DetectionSpec(
        max_detections=max_det, pad_value=pad, output_fields=list(fields), category_ids=list(category_ids),
        resize=r.choice("resize", RESIZE_MODES, default="letterbox"),
        box_units=r.choice("box_units", BOX_UNITS, default="input_pixels"), **thresholds)


def check_detection_manifest(manifest: Any, where: str) -> None:
    """The tensors a detection manifest declares must be the contract's: uint8 S x S x 3 in, [max_det, 6] out."""
    spec: DetectionSpec = manifest.detection
    height, width = manifest.preprocessing.input_size
    if manifest.preprocessing.layout != "NHWC":
        raise ManifestError(f"{where}: a detection model's preprocessing.layout must be 'NHWC', "
                            f"got {manifest.preprocessing.layout!r}")
    if manifest.input.dtype != "uint8" or manifest.input.shape != (height, width, 3):
        raise ManifestError(f"{where}: a detection model's input must be uint8 of shape [{height}, {width}, 3] "
                            f"(preprocessing.input_size), got {manifest.input.dtype} {list(manifest.input.shape)}")
    expected = (spec.max_detections, len(OUTPUT_FIELDS))
    if manifest.output.dtype != "float32" or manifest.output.shape != expected:
        raise ManifestError(f"{where}: a detection model's output must be float32 of shape {list(expected)} "
                            f"(detection.max_detections x {OUTPUT_FIELDS}), got {manifest.output.dtype} "
                            f"{list(manifest.output.shape)}")
