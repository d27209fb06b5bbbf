"""The detection part of the model contract: the manifest's `detection` section.

A detection model takes the letterboxed uint8 image (N x S x S x 3, the model's channel order)
and answers with [N, max_detections, 6] rows (x1, y1, x2, y2 in letterboxed input pixels,
score, class index), best first, padding rows all zero. Decode and NMS run inside the graph;
`nms_score_threshold`, `iou_threshold` and `max_detections` record what the graph bakes in, and
`score_threshold` is the default a client applies before showing or publishing a box.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from robot_compress.runtime.schema import Schema, setting

TASKS = ("classification", "detection")
OUTPUT_FIELDS = ["x1", "y1", "x2", "y2", "score", "class"]

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


class DetectionSpec(Schema):
    """How to feed a detection model and read its answer (manifest.json `detection`)."""

    score_threshold: float = setting(description="default score a client shows or publishes a box above", low=0, high=1)
    nms_score_threshold: float = setting(description="candidate floor baked into the graph's NMS", low=0, high=1)
    iou_threshold: float = setting(description="NMS IoU threshold baked into the graph", low=0, high=1)
    max_detections: int = setting(description="fixed number of output rows per image", low=1, high=100_000)
    resize: Literal["letterbox"] = setting("letterbox", "aspect-preserving resize into the top-left corner")
    pad_value: int = setting(114, "grey level of the letterbox padding", 0, 255)
    output_fields: list[str] = setting(default_factory=lambda: list(OUTPUT_FIELDS),
                                       description="meaning of each output column")
    box_units: Literal["input_pixels"] = setting("input_pixels", "box coordinates are letterboxed input pixels")
    category_ids: list[int] = setting(default_factory=list,
                                      description="dataset id of each class index, for COCO evaluation")

    @field_validator("output_fields")
    @classmethod
    def _fields(cls, fields: list[str]) -> list[str]:
        if fields != OUTPUT_FIELDS:
            raise ValueError(f"must be {OUTPUT_FIELDS}")
        return fields


def check_detection_manifest(manifest: Any) -> None:
    """ValueError unless a detection manifest's tensors are the contract's: uint8 S x S x 3 in,
    [max_detections, 6] out, one category id per label (when given)."""
    spec: DetectionSpec | None = manifest.detection
    if spec is None:
        raise ValueError("a detection model needs a 'detection' section (thresholds, max_detections)")
    height, width = manifest.preprocessing.input_size
    if manifest.preprocessing.layout != "NHWC":
        raise ValueError(f"a detection model's preprocessing.layout must be 'NHWC', got "
                         f"{manifest.preprocessing.layout!r}")
    if manifest.input.dtype != "uint8" or manifest.input.shape != (height, width, 3):
        raise ValueError(f"a detection model's input must be uint8 of shape [{height}, {width}, 3] "
                         f"(preprocessing.input_size), got {manifest.input.dtype} {list(manifest.input.shape)}")
    expected = (spec.max_detections, len(OUTPUT_FIELDS))
    if manifest.output.dtype != "float32" or manifest.output.shape != expected:
        raise ValueError(f"a detection model's output must be float32 of shape {list(expected)} "
                         f"(detection.max_detections x {OUTPUT_FIELDS}), got {manifest.output.dtype} "
                         f"{list(manifest.output.shape)}")
    if spec.category_ids and len(spec.category_ids) != len(manifest.labels):
        raise ValueError(f"detection.category_ids must be {len(manifest.labels)} integers (one per label), "
                         f"got {len(spec.category_ids)} entries")
