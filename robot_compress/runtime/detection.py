"""Detection pre- and postprocessing on the robot side: plain numpy + OpenCV, no torch.

A detection model's wire input is the letterboxed uint8 image (N x S x S x 3 in the model's
channel order): the image is resized keeping its aspect ratio into the top-left corner of the
square and the rest is filled with the pad value. The model answers with a fixed-size
[N, max_det, 6] tensor of (x1, y1, x2, y2, score, class) in letterboxed pixels, padding rows
scored 0; `to_detections` maps those back to the original image's pixels.

`decode_raw` and `nms` are a numpy reference of the in-graph decode and NMS, used to check an
exported graph and to evaluate a raw-head model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robot_compress.runtime.errors import ImageError
from robot_compress.runtime.preprocess import to_model_channels

OUTPUT_FIELDS = ("x1", "y1", "x2", "y2", "score", "class")


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model's square input: scale factor and original size."""

    ratio: float
    height: int
    width: int


@dataclass(frozen=True)
class Detection:
    """One box in the original image's pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    label: str

    def to_json(self) -> dict:
        return {"box": [round(v, 2) for v in (self.x1, self.y1, self.x2, self.y2)],
                "score": round(self.score, 4), "class_id": self.class_id, "label": self.label}


def letterbox(image: np.ndarray, size: int, encoding: str = "bgr8", channel_order: str = "BGR",
              pad_value: int = 114) -> tuple[np.ndarray, Letterbox]:
    """One HxWx3 uint8 image -> (size x size x 3 uint8 in the model's channel order, its Letterbox).

    Bilinear resize keeping the aspect ratio, into the top-left corner, as YOLOX was trained.
    """
    pixels = to_model_channels(image, encoding, channel_order)
    height, width = pixels.shape[:2]
    ratio = min(size / height, size / width)
    new_h, new_w = int(height * ratio), int(width * ratio)
    out = np.full((size, size, 3), pad_value, dtype=np.uint8)
    if (new_h, new_w) == (height, width):
        out[:height, :width] = pixels
    else:
        out[:new_h, :new_w] = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return out, Letterbox(ratio=ratio, height=height, width=width)


def _check_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != len(OUTPUT_FIELDS):
        raise ImageError(f"detection output must be [max_det, {len(OUTPUT_FIELDS)}], got {list(rows.shape)}")
    return rows


def to_image_rows(rows: np.ndarray, box: Letterbox) -> np.ndarray:
    """One image's [max_det, 6] rows in letterboxed pixels -> the same rows in the original image's
    pixels (boxes clipped to the image; score, class and the zero padding unchanged)."""
    rows = _check_rows(rows).copy()
    rows[:, :4] /= box.ratio
    rows[:, [0, 2]] = rows[:, [0, 2]].clip(0, box.width)
    rows[:, [1, 3]] = rows[:, [1, 3]].clip(0, box.height)
    return rows


def to_detections(rows: np.ndarray, box: Letterbox, labels: list[str], score_threshold: float = 0.0) -> list[Detection]:
    """One image's [max_det, 6] model output -> its detections in original pixels, best first.

    Rows at or below `score_threshold` (and the zero-score padding) are dropped.
    """
    return rows_to_detections(to_image_rows(rows, box), labels, score_threshold)


def rows_to_detections(rows: np.ndarray, labels: list[str], score_threshold: float = 0.0,
                       max_detections: int | None = None, classes: set[int] | None = None) -> list[Detection]:
    """[max_det, 6] rows already in image pixels -> Detections, best first: rows scored at or below
    `score_threshold` (and the zero padding) dropped, only `classes` (indices) if given, at most
    `max_detections`."""
    rows = _check_rows(rows)
    keep = rows[:, 4] > max(score_threshold, 0.0)
    if classes is not None:
        keep &= np.isin(np.round(rows[:, 5]).astype(np.int64), sorted(classes))
    rows = rows[keep]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][:max_detections]
    out = []
    for (x1, y1, x2, y2), score, cls in zip(rows[:, :4].tolist(), rows[:, 4].tolist(), rows[:, 5].tolist(),
                                            strict=True):
        class_id = int(round(cls))
        label = labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
        out.append(Detection(x1, y1, x2, y2, float(score), class_id, label))
    return out


def grid_and_strides(size: int, strides: tuple[int, ...] = (8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Cell (x, y) offsets [A, 2] and strides [A, 1] in the raw head's row order."""
    grids, expanded = [], []
    for stride in strides:
        n = size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack((xs, ys), axis=-1).reshape(-1, 2))
        expanded.append(np.full((n * n, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def decode_raw(raw: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw YOLOX head [A, 5 + C] -> (boxes x1y1x2y2 [A, 4], best score [A], best class [A])."""
    grid, stride = grid_and_strides(size)
    xy = (raw[:, :2] + grid) * stride
    wh = np.exp(raw[:, 2:4]) * stride
    boxes = np.concatenate((xy - wh / 2, xy + wh / 2), axis=1)
    cls = raw[:, 5:].argmax(axis=1)
    scores = raw[:, 4] * raw[np.arange(len(raw)), 5 + cls]
    return boxes.astype(np.float32), scores.astype(np.float32), cls


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, score_threshold: float,
        iou_threshold: float, max_det: int) -> np.ndarray:
    """Class-aware greedy NMS -> [max_det, 6] rows (x1, y1, x2, y2, score, class), zero-padded.

    Same rule as ONNX NonMaxSuppression: candidates strictly above the score threshold, a box
    suppressed by a kept box of its class whose IoU is strictly above the IoU threshold.
    """
    out = np.zeros((max_det, 6), dtype=np.float32)
    candidates = np.flatnonzero(scores > score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    kept: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    for i in order:
        if kept:
            k = np.asarray(kept)
            k = k[classes[k] == classes[i]]
            if len(k):
                w = (np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0])).clip(0)
                h = (np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1])).clip(0)
                inter = w * h
                iou = inter / np.maximum(area[k] + area[i] - inter, 1e-9)
                if (iou > iou_threshold).any():
                    continue
        kept.append(int(i))
        if len(kept) == max_det:
            break
    if kept:
        k = np.asarray(kept)
        out[:len(k), :4] = boxes[k]
        out[:len(k), 4] = scores[k]
        out[:len(k), 5] = classes[k]
    return out


def detect(backend, images: list[np.ndarray], encoding: str = "bgr8",
           score_threshold: float | None = None, timeout_s: float | None = None) -> list[list[Detection]]:
    """Camera images (each HxWx3 uint8, any size) -> detections in each image's own pixels.

    `backend` is anything with `infer(batch)` and `manifest` (the local backend, the edge client);
    `score_threshold` defaults to the manifest's. One batch for all images.
    """
    manifest = backend.manifest
    spec = manifest.detection
    if spec is None:
        raise ImageError(f"model {manifest.name!r} is a {manifest.task} model, not a detection model")
    size = manifest.preprocessing.input_size[0]
    boxed = [letterbox(image, size, encoding, manifest.preprocessing.channel_order, spec.pad_value)
             for image in images]
    batch = np.stack([tensor for tensor, _ in boxed])
    output = backend.infer(batch) if timeout_s is None else backend.infer(batch, timeout_s=timeout_s)
    threshold = spec.score_threshold if score_threshold is None else score_threshold
    return [to_detections(rows, box, manifest.labels, threshold) for rows, (_, box) in zip(output, boxed, strict=True)]


class ImageDetector:
    """A backend seen through camera images: `infer(images)` takes BGR uint8 images [N, H, W, 3] of
    any size and answers [N, max_det, 6] rows in those images' own pixels.

    Each backend letterboxes at its own model's input size (read from its manifest at every call,
    so an edge client that learnt the served size from the edge's metadata is followed), which is
    what lets a 320 robot model and a 640 edge model answer the same frame in the same coordinates.
    The router passes these answers through unchanged; `probe` and `close` go to the backend.
    """

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    @property
    def manifest(self):
        return self.backend.manifest

    def infer(self, images: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        manifest = self.backend.manifest
        spec = manifest.detection
        if spec is None:
            raise ImageError(f"model {manifest.name!r} is a {manifest.task} model, not a detection model")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ImageError(f"images must be uint8 [N, H, W, 3] (BGR), got {images.dtype} {list(images.shape)}")
        size = manifest.preprocessing.input_size[0]
        boxed = [letterbox(image, size, "bgr8", manifest.preprocessing.channel_order, spec.pad_value)
                 for image in images]
        output = self.backend.infer(np.stack([tensor for tensor, _ in boxed]), timeout_s=timeout_s)
        return np.stack([to_image_rows(rows, box) for rows, (_, box) in zip(output, boxed, strict=True)])

    def probe(self, timeout_s: float | None = None) -> float:
        return self.backend.probe(timeout_s)

    def close(self) -> None:
        self.backend.close()


def draw_detections(image: np.ndarray, detections: list[Detection]) -> np.ndarray:
    """A copy of a BGR image with each box and its 'label score' drawn on it."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for d in detections:
        colour = tuple(int(c) for c in np.random.default_rng(d.class_id).integers(60, 255, 3))
        top_left, bottom_right = (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2))
        cv2.rectangle(canvas, top_left, bottom_right, colour, thickness)
        text = f"{d.label} {d.score:.2f}"
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        y = max(int(d.y1), h + base)
        cv2.rectangle(canvas, (int(d.x1), y - h - base), (int(d.x1) + w, y), colour, -1)
        cv2.putText(canvas, text, (int(d.x1), y - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
