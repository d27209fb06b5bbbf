"""Detector training images: a COCO folder (images/ + instances.json), decoded once, and the
strong, label-free augmentation that distillation on a few hundred images needs.

Distillation compares the student with the teacher on the same augmented input, so no boxes have
to follow the pixels: mosaic (four images around a random centre), a random affine warp (scale,
rotation, shear, translation), horizontal flip and HSV gains, as in YOLOX's training recipe.
The result is letterboxed-size uint8 BGR (the detection contract's wire format); the pipeline
casts it to float in the model, as the exported graph does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from robot_compress.runtime.detection import letterbox

PAD_VALUE = 114


@dataclass
class DetectionImages:
    """COCO image entries with their pixels: BGR uint8, long side resized to at most `side`."""

    folder: Path
    entries: list[dict]
    images: list[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def subset(self, indices) -> DetectionImages:
        return DetectionImages(self.folder, [self.entries[i] for i in indices], [self.images[i] for i in indices])

    def letterboxed(self, size: int, count: int | None = None) -> np.ndarray:
        """The first `count` images letterboxed as the robot feeds them: [N, size, size, 3] uint8 BGR."""
        return np.stack([letterbox(image, size)[0] for image in self.images[:count]])


def coco_entries(folder: str | Path) -> list[dict]:
    """The `images` list of folder/instances.json; ValueError naming what is missing."""
    folder = Path(folder)
    annotations = folder / "instances.json"
    if not annotations.is_file() or not (folder / "images").is_dir():
        raise ValueError(f"{folder} is not a COCO folder (images/ and instances.json)")
    return json.loads(annotations.read_text())["images"]


def load_detection_images(folder: str | Path, side: int, limit: int | None = None) -> DetectionImages:
    """Decode a COCO folder's images (every label_status: distillation needs no labels), each
    resized so its long side is `side` (what mosaic and letterbox need at most)."""
    folder = Path(folder)
    entries = coco_entries(folder)[:limit]
    images = []
    for entry in entries:
        path = folder / "images" / entry["file_name"]
        image = cv2.imread(str(path))
        if image is None:
            raise ValueError(f"{path} is missing or not an image")
        images.append(_fit(image, side))
    if not images:
        raise ValueError(f"{folder} has no images")
    return DetectionImages(folder, entries, images)


def load_image_folder(folder: str | Path, side: int, limit: int | None = None) -> DetectionImages:
    """The first `limit` .jpg/.png images of a plain folder in name order (no annotations needed),
    each resized so its long side is at most `side`."""
    folder = Path(folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit] \
        if folder.is_dir() else []
    if not paths:
        raise ValueError(f"no .jpg/.png images in {folder}")
    images = []
    for path in paths:
        image = cv2.imread(str(path))
        if image is None:
            raise ValueError(f"{path} is not a readable image")
        images.append(_fit(image, side))
    return DetectionImages(folder, [{"file_name": p.name} for p in paths], images)


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    ratio = side / max(image.shape[:2])
    if ratio < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * ratio)), max(1, round(image.shape[0] * ratio))),
                           interpolation=cv2.INTER_AREA)
    return image


@dataclass(frozen=True)
class Augment:
    """YOLOX-style augmentation settings (its defaults for the small models)."""

    mosaic: float = 1.0  # probability of a 4-image mosaic
    scale: tuple[float, float] = (0.5, 1.5)
    degrees: float = 10.0
    translate: float = 0.1
    shear: float = 2.0
    flip: float = 0.5
    hsv: tuple[float, float, float] = (0.015, 0.7, 0.4)  # hue, saturation, value gains (fractions)


def _mosaic(images: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Four images around a random centre of a 2*size canvas, each letterboxed to `size` first."""
    canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, dtype=np.uint8)
    cx, cy = (int(rng.uniform(0.5 * size, 1.5 * size)) for _ in range(2))
    for k, image in enumerate(images):
        ratio = size / max(image.shape[:2])
        h, w = max(1, int(image.shape[0] * ratio)), max(1, int(image.shape[1] * ratio))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        # quadrant k: the image's corner that touches the centre (bottom-right of top-left tile, ...)
        x0, y0 = (cx - w if k % 2 == 0 else cx), (cy - h if k < 2 else cy)
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, 2 * size), min(y0 + h, 2 * size)
        canvas[cy0:cy1, cx0:cx1] = image[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return canvas


def _affine(image: np.ndarray, size: int, config: Augment, rng: np.random.Generator) -> np.ndarray:
    """Random rotation/scale/shear about the image centre plus translation, into a size x size output."""
    h, w = image.shape[:2]
    centre = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
    angle, scale = rng.uniform(-config.degrees, config.degrees), rng.uniform(*config.scale)
    rotate = np.eye(3)
    rotate[:2] = cv2.getRotationMatrix2D((0, 0), angle, scale)
    shear = np.eye(3)
    shear[0, 1], shear[1, 0] = (math.tan(math.radians(rng.uniform(-config.shear, config.shear))) for _ in range(2))
    move = np.eye(3)
    move[0, 2] = size / 2 + rng.uniform(-config.translate, config.translate) * size
    move[1, 2] = size / 2 + rng.uniform(-config.translate, config.translate) * size
    matrix = (move @ shear @ rotate @ centre)[:2]
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3)


def _hsv(image: np.ndarray, gains: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Random multiplicative hue/saturation/value gains (OpenCV's 0-179 hue wraps around)."""
    if not any(gains):  # the HSV round trip alone moves pixels by a few levels
        return image
    r = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)


def augmented(data: DetectionImages, index: int, size: int, rng: np.random.Generator,
              config: Augment = Augment()) -> np.ndarray:
    """One training input for image `index`: [size, size, 3] uint8 BGR."""
    if rng.random() < config.mosaic:
        others = rng.integers(0, len(data), 3)
        canvas = _mosaic([data.images[index], *(data.images[i] for i in others)], size, rng)
    else:
        canvas = letterbox(data.images[index], size)[0]
    image = _affine(canvas, size, config, rng)
    if rng.random() < config.flip:
        image = image[:, ::-1]
    return np.ascontiguousarray(_hsv(image, config.hsv, rng))


def augmented_batch(data: DetectionImages, indices, size: int, rng: np.random.Generator,
                    config: Augment = Augment()) -> np.ndarray:
    return np.stack([augmented(data, int(i), size, rng, config) for i in indices])
