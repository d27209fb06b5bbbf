"""Labelled uint8 images from disk, without torch: CIFAR-10 (npz or python batches) and image folders.

Used by the evaluator, the simulated camera and (wrapped in torch datasets) the compression
pipeline, so every part reads the same pixels.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


@dataclass
class LabelledImages:
    """N uint8 RGB images (NxHxWx3) with integer labels and the label names."""

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(self.images[indices], self.labels[indices], self.label_names)


def load_cifar10_npz(path: str | Path, limit: int | None = None) -> LabelledImages:
    """The npz files of ../shared/data/cifar10 (keys x: uint8 NxHxWx3 RGB, y: labels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 npz file {path} does not exist")
    with np.load(path) as data:
        if "x" not in data or "y" not in data:
            raise ValueError(f"{path} has arrays {list(data.keys())}, expected 'x' and 'y'")
        x, y = data["x"], data["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y):
        raise ValueError(f"{path}: expected x uint8 [N,H,W,3] and y [N], got x {x.dtype} {x.shape}, y {y.shape}")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return LabelledImages(x, y.astype(np.int64), list(CIFAR10_LABELS))


def load_cifar10_batches(directory: str | Path, split: str = "train") -> LabelledImages:
    """The official CIFAR-10 python version (cifar-10-batches-py/: data_batch_1..5, test_batch)."""
    directory = Path(directory)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a CIFAR-10 python batches directory: missing {missing}")
    xs, ys = [], []
    for name in names:
        with open(directory / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    label_names = list(CIFAR10_LABELS)
    meta = directory / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            label_names = [n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"]]
    return LabelledImages(np.concatenate(xs), np.concatenate(ys), label_names)


def load_image_folder(root: str | Path, size: tuple[int, int] | None = None) -> LabelledImages:
    """An ImageFolder tree (root/<class>/<image>), classes sorted by name; resized to `size` (h, w)
    when given so the images stack. Unreadable files raise, naming the file."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"{root} is not an image folder (expected {root}/<class>/<image files>)")
    images, labels = [], []
    for index, cls in enumerate(classes):
        for file in sorted((root / cls).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"could not read image {file}")
            if size is not None:
                bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            images.append(bgr[:, :, ::-1])
            labels.append(index)
    if not images:
        raise FileNotFoundError(f"{root} holds no images with suffixes {IMAGE_SUFFIXES}")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(f"{root}: images have different sizes {sorted(shapes)[:3]}...; pass size=(h, w)")
    return LabelledImages(np.stack(images), np.asarray(labels, dtype=np.int64), classes)


def load_labelled_images(path: str | Path, split: str = "train", limit: int | None = None,
                         size: tuple[int, int] | None = None) -> LabelledImages:
    """Dispatch on what `path` is: an .npz file, a CIFAR-10 batches directory, or an image folder."""
    path = Path(path)
    if path.suffix == ".npz":
        return load_cifar10_npz(path, limit)
    if (path / "data_batch_1").is_file() or (path / "test_batch").is_file():
        data = load_cifar10_batches(path, split)
    else:
        data = load_image_folder(path, size)
    return data.subset(np.arange(min(limit, len(data)))) if limit is not None else data
