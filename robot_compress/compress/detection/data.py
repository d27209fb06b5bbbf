"""Detector training images: a COCO folder (images/ + instances.json), decoded once, and the
strong, label-free augmentation that distillation on a few hundred images needs.

Augmentation as in YOLOX's training recipe: mosaic (four images around a random centre), a
random affine warp (scale, rotation, shear, translation), horizontal flip and HSV gains. The result
is letterboxed-size uint8 BGR (the detection contract's wire format); the pipeline casts it to
float in the model, as the exported graph does. Distillation compares student and teacher on the
same input and needs no boxes; the label loss gets each image's boxes carried through the same
geometric transforms, in the input's pixels.

Labels: only images whose `label_status` says every object is boxed (`official_full`,
`converted_yolo`) carry boxes. `partial_categories(...)` images (a few categories boxed, the rest
unlabelled objects) and `none` images have no boxes here: as negatives they would teach the
detector that their unlabelled objects are background, so they take no part in the label loss.
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
FULL_LABEL_STATUSES = ("official_full", "converted_yolo")  # every object in the image is boxed
MIN_BOX_SIDE = 2.0  # px in the training input: a box clipped thinner than this is dropped (as YOLOX)
NO_BOXES = np.zeros((0, 5), np.float32)


def usable_for_labels(status: str | None) -> bool:
    """Whether an image's label_status allows a supervised loss on every category."""
    return status in FULL_LABEL_STATUSES


@dataclass
class DetectionImages:
    """COCO image entries with their pixels: BGR uint8, long side resized to at most `side`.
    `boxes[i]`: [K, 5] float32 (class index 0-79 in COCO80 order, x1, y1, x2, y2 in the stored
    image's pixels), or None where the image's label status allows no label loss."""

    folder: Path
    entries: list[dict]
    images: list[np.ndarray] = field(repr=False)
    boxes: list[np.ndarray | None] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.boxes:
            self.boxes = [None] * len(self.images)

    def __len__(self) -> int:
        return len(self.entries)

    def subset(self, indices) -> DetectionImages:
        return DetectionImages(self.folder, [self.entries[i] for i in indices], [self.images[i] for i in indices],
                               [self.boxes[i] for i in indices])

    @property
    def labelled(self) -> np.ndarray:
        """Indices of the images that carry boxes."""
        return np.array([i for i, b in enumerate(self.boxes) if b is not None], dtype=np.int64)

    def letterboxed_boxes(self, size: int, count: int | None = None) -> list[np.ndarray | None]:
        """The boxes of `letterboxed(size, count)`, in its pixels."""
        out = []
        for image, boxes in zip(self.images[:count], self.boxes[:count], strict=True):
            ratio = min(size / image.shape[0], size / image.shape[1])
            out.append(None if boxes is None else _scaled(boxes, int(image.shape[1] * ratio) / image.shape[1],
                                                          int(image.shape[0] * ratio) / image.shape[0]))
        return out

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


def coco_boxes(folder: str | Path) -> dict[int, np.ndarray]:
    """Per image id of a fully labelled image: [K, 5] (class index, x1, y1, x2, y2) in its
    original pixels; crowd regions are left out (they are not single objects)."""
    from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS

    data = json.loads((Path(folder) / "instances.json").read_text())
    index = {category: i for i, category in enumerate(COCO80_CATEGORY_IDS)}
    rows: dict[int, list] = {e["id"]: [] for e in data["images"] if usable_for_labels(e.get("label_status"))}
    for a in data.get("annotations", []):
        if a["image_id"] in rows and not a.get("iscrowd", 0) and a["category_id"] in index:
            x, y, w, h = a["bbox"]
            if w > 0 and h > 0:
                rows[a["image_id"]].append((index[a["category_id"]], x, y, x + w, y + h))
    return {k: np.array(v, np.float32).reshape(-1, 5) for k, v in rows.items()}


def label_counts(folder: str | Path) -> dict[str, int]:
    """How many images of a COCO folder have each label_status."""
    counts: dict[str, int] = {}
    for entry in coco_entries(folder):
        status = str(entry.get("label_status", "official_full"))
        counts[status] = counts.get(status, 0) + 1
    return counts


def _scaled(boxes: np.ndarray, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    out = boxes.copy()
    out[:, [1, 3]] = boxes[:, [1, 3]] * sx + dx
    out[:, [2, 4]] = boxes[:, [2, 4]] * sy + dy
    return out


def _kept(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Boxes clipped to the canvas, without those left thinner than MIN_BOX_SIDE. A partly visible
    object keeps its (clipped) box: its pixels are in the input, so it is not background."""
    out = boxes.copy()
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, width)
    out[:, [2, 4]] = out[:, [2, 4]].clip(0, height)
    w, h = out[:, 3] - out[:, 1], out[:, 4] - out[:, 2]
    return out[(w > MIN_BOX_SIDE) & (h > MIN_BOX_SIDE)]


def load_detection_images(folder: str | Path, side: int, limit: int | None = None) -> DetectionImages:
    """Decode a COCO folder's images (every label_status: distillation needs no labels), each
    resized so its long side is `side` (what mosaic and letterbox need at most), with the boxes of
    the fully labelled ones."""
    folder = Path(folder)
    entries = coco_entries(folder)[:limit]
    labels = coco_boxes(folder)
    images, boxes = [], []
    for entry in entries:
        path = folder / "images" / entry["file_name"]
        image = cv2.imread(str(path))
        if image is None:
            raise ValueError(f"{path} is missing or not an image")
        height, width = image.shape[:2]
        image = _fit(image, side)
        images.append(image)
        own = labels.get(entry["id"])
        boxes.append(None if own is None else _scaled(own, image.shape[1] / width, image.shape[0] / height))
    if not images:
        raise ValueError(f"{folder} has no images")
    return DetectionImages(folder, entries, images, boxes)


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


def _mosaic(images: list[np.ndarray], size: int, rng: np.random.Generator,
            boxes: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Four images around a random centre of a 2*size canvas, each letterboxed to `size` first;
    with `boxes` (one array per image), their boxes on the canvas."""
    canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, dtype=np.uint8)
    cx, cy = (int(rng.uniform(0.5 * size, 1.5 * size)) for _ in range(2))
    placed = []
    for k, image in enumerate(images):
        ratio = size / max(image.shape[:2])
        h, w = max(1, int(image.shape[0] * ratio)), max(1, int(image.shape[1] * ratio))
        # quadrant k: the image's corner that touches the centre (bottom-right of top-left tile, ...)
        x0, y0 = (cx - w if k % 2 == 0 else cx), (cy - h if k < 2 else cy)
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, 2 * size), min(y0 + h, 2 * size)
        if boxes is not None:
            placed.append(_scaled(boxes[k], w / image.shape[1], h / image.shape[0], x0, y0))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        canvas[cy0:cy1, cx0:cx1] = image[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    if boxes is None:
        return canvas, None
    placed = np.concatenate(placed) if placed else NO_BOXES
    return canvas, _kept(placed, 2 * size, 2 * size)


def _affine(image: np.ndarray, size: int, config: Augment, rng: np.random.Generator,
            boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Random rotation/scale/shear about the image centre plus translation, into a size x size
    output; each box becomes the axis-aligned hull of its warped corners (as YOLOX does)."""
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
    warped = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3)
    if boxes is None:
        return warped, None
    corners = boxes[:, [1, 2, 3, 2, 3, 4, 1, 4]].reshape(-1, 2)  # (x1,y1) (x2,y1) (x2,y2) (x1,y2)
    corners = (corners @ matrix[:, :2].T + matrix[:, 2]).reshape(-1, 4, 2)
    out = np.concatenate([boxes[:, :1], corners.min(1), corners.max(1)], axis=1).astype(np.float32)
    return warped, _kept(out, size, size)


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


def augmented_with_boxes(data: DetectionImages, index: int, size: int, rng: np.random.Generator,
                         config: Augment = Augment(), labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """One training input for image `index`, [size, size, 3] uint8 BGR, and its boxes [K, 5]
    (class index, x1, y1, x2, y2 in the input's pixels), or None where image `index` has none.

    With `labels`, a labelled image's mosaic partners are drawn from the labelled images, so the
    whole mosaic is boxed; the random draws are the same in number either way."""
    own = data.boxes[index] if labels else None
    if rng.random() < config.mosaic:
        pool = data.labelled if own is not None else np.arange(len(data))
        others = pool[rng.integers(0, len(pool), 3)]
        canvas, boxes = _mosaic([data.images[index], *(data.images[i] for i in others)], size, rng,
                                None if own is None else [own, *(data.boxes[i] for i in others)])
    else:
        canvas, box = letterbox(data.images[index], size)
        image = data.images[index]
        boxes = None if own is None else _scaled(own, int(image.shape[1] * box.ratio) / image.shape[1],
                                                 int(image.shape[0] * box.ratio) / image.shape[0])
    image, boxes = _affine(canvas, size, config, rng, boxes)
    if rng.random() < config.flip:
        image = image[:, ::-1]
        if boxes is not None:
            boxes = boxes.copy()
            boxes[:, [1, 3]] = size - boxes[:, [3, 1]]
    return np.ascontiguousarray(_hsv(image, config.hsv, rng)), boxes


def augmented(data: DetectionImages, index: int, size: int, rng: np.random.Generator,
              config: Augment = Augment()) -> np.ndarray:
    """One training input for image `index`: [size, size, 3] uint8 BGR."""
    return augmented_with_boxes(data, index, size, rng, config, labels=False)[0]


def augmented_batch(data: DetectionImages, indices, size: int, rng: np.random.Generator,
                    config: Augment = Augment(), labels: bool = False):
    """[N, size, size, 3] uint8 BGR; with `labels`, also the per-image boxes (None: no label loss)."""
    pairs = [augmented_with_boxes(data, int(i), size, rng, config, labels) for i in indices]
    images = np.stack([p[0] for p in pairs])
    return (images, [p[1] for p in pairs]) if labels else images
