"""Picture boards: real photographs standing in the world, with their labelled boxes.

A board is a flat rectangle in the world showing one image. Its boxes are kept in board coordinates
(u right, v down, both 0..1 across the picture), so the ground truth of any frame is the board's
plane-to-image homography applied to them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from robot_compress.sim.assets import AssetError, cache_dir

TEXTURE_MAX_SIDE = 512  # texture memory and upload time grow with it; a board seldom covers more pixels
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class LabelledBox:
    u0: float
    v0: float
    u1: float
    v1: float
    category_id: int
    label: str


@dataclass
class Picture:
    image_id: str
    rgb: np.ndarray  # HxWx3 uint8
    boxes: list[LabelledBox] = field(default_factory=list)
    label: str = ""  # a whole-picture label (CIFAR-10 mode)
    class_id: int = -1


@dataclass
class Board:
    """A picture standing on the floor at `center` (x, y, z of its middle), its front facing `yaw`."""
    name: str
    picture: Picture
    center: tuple[float, float, float]
    yaw: float
    width: float

    @property
    def height(self) -> float:
        h, w = self.picture.rgb.shape[:2]
        return self.width * h / w

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normal towards the viewer, picture's right, picture's up) in world coordinates."""
        normal = np.array([math.cos(self.yaw), math.sin(self.yaw), 0.0])
        up = np.array([0.0, 0.0, 1.0])
        right = np.cross(-normal, up)
        return normal, right, up

    def world_point(self, u: float, v: float) -> np.ndarray:
        _, right, up = self.axes()
        return np.asarray(self.center) + right * (u - 0.5) * self.width + up * (0.5 - v) * self.height

    def corners(self) -> np.ndarray:
        """World corners in the order (u, v) = (0,0), (1,0), (1,1), (0,1)."""
        return np.array([self.world_point(u, v) for u, v in ((0, 0), (1, 0), (1, 1), (0, 1))])


def texture_file(picture: Picture) -> Path:
    """The picture as a PNG in the cache (MuJoCo reads PNG textures, not JPEG)."""
    rgb = picture.rgb
    scale = TEXTURE_MAX_SIDE / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    digest = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()[:16]
    path = cache_dir() / "textures" / f"{digest}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        cv2.imwrite(str(tmp), rgb[:, :, ::-1])
        tmp.replace(path)
    return path


def load_coco_pictures(folder: Path, count: int) -> list[Picture]:
    """`count` images (sorted by file name) of a COCO folder (images/ + instances.json) with their boxes;
    a folder without instances.json gives pictures without boxes."""
    folder = Path(folder)
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    if not images_dir.is_dir():
        raise AssetError(f"picture folder {folder} does not exist")
    annotations = folder / "instances.json"
    by_file: dict[str, list[LabelledBox]] = {}
    if annotations.is_file():
        try:
            coco = json.loads(annotations.read_text())
            names = {c["id"]: c["name"] for c in coco["categories"]}
            images = {im["id"]: im for im in coco["images"]}
            for ann in coco["annotations"]:
                if ann.get("iscrowd"):
                    continue
                im = images[ann["image_id"]]
                x, y, w, h = ann["bbox"]
                by_file.setdefault(im["file_name"], []).append(LabelledBox(
                    x / im["width"], y / im["height"], (x + w) / im["width"], (y + h) / im["height"],
                    int(ann["category_id"]), names[ann["category_id"]]))
        except (KeyError, ValueError, TypeError) as exc:
            raise AssetError(f"{annotations} is not COCO instances JSON: {type(exc).__name__}: {exc}") from exc
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if annotations.is_file():
        files = [p for p in files if by_file.get(p.name)]
    if not files:
        raise AssetError(f"no pictures (jpg/png) with boxes in {images_dir}")
    pictures = []
    for path in files[:count]:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise AssetError(f"cannot decode picture {path}")
        pictures.append(Picture(path.stem, bgr[:, :, ::-1].copy(), by_file.get(path.name, [])))
    return pictures


def load_cifar_pictures(source: Path, count: int = 0) -> list[Picture]:
    """Labelled pictures of a CIFAR-10 npz or an ImageFolder tree (the first `count`, 0 = all)."""
    from robot_compress.runtime.datasets import load_labelled_images

    try:
        data = load_labelled_images(Path(source), split="test", limit=count or None)
    except (OSError, ValueError, KeyError) as exc:
        raise AssetError(f"cannot load labelled pictures from {source}: {exc}") from exc
    n = len(data.labels)
    if not n:
        raise AssetError(f"no labelled pictures in {source}")
    return [Picture(f"{i}", np.ascontiguousarray(data.images[i]), [], data.label_names[int(data.labels[i])],
                    int(data.labels[i])) for i in range(n)]
