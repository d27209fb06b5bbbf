"""Torch datasets over the runtime's image loaders: a seeded train/validation split, standard
augmentation (pad-and-crop + horizontal flip), and the manifest's normalisation.

Augmentation and normalisation run on whole uint8 batches: with two CPU cores, per-image Python
transforms would cost more than the small students' forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from robot_compress.compress.recipe import DataConfig
from robot_compress.runtime.datasets import LabelledImages, load_labelled_images
from robot_compress.runtime.model_contract import Preprocessing


@dataclass
class Splits:
    train: LabelledImages
    val: LabelledImages  # taken off the training data; picks checkpoints
    eval: LabelledImages  # reported accuracies only
    spec: Preprocessing


def load_splits(config: DataConfig, seed: int) -> Splits:
    """Load the training and evaluation images; hold out `val_size` training images chosen by a
    permutation seeded with `seed`, so the split is the same on every machine and on resume."""
    size = tuple(config.input_size)
    train = load_labelled_images(config.train, split="train", limit=config.train_limit, size=size)
    evaluation = load_labelled_images(config.eval, split="test", limit=config.eval_limit, size=size)
    if config.val_size >= len(train):
        raise ValueError(f"data.val_size {config.val_size} leaves no training images out of {len(train)}")
    order = np.random.default_rng(seed).permutation(len(train))
    spec = Preprocessing(input_size=size, mean=config.mean, std=config.std)
    return Splits(train=train.subset(np.sort(order[config.val_size:])),
                  val=train.subset(np.sort(order[:config.val_size])), eval=evaluation, spec=spec)


def calibration_sample(data: LabelledImages, count: int, seed: int) -> np.ndarray:
    """`count` uint8 NHWC images drawn by a seeded rule (the same ones on every machine), in file
    order: what quantization calibrates on and depth pruning scores blocks with."""
    order = np.random.default_rng(seed).permutation(len(data))[:count]
    return data.images[np.sort(order)]


class ImageDataset(Dataset):
    """LabelledImages as (uint8 CHW tensor, label) pairs."""

    def __init__(self, data: LabelledImages):
        self.images = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2)))
        self.labels = torch.from_numpy(data.labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def loader(data: LabelledImages, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches in a seeded order (seed per epoch makes a resumed run see the same batches)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(ImageDataset(data), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=0, drop_last=False)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by 1/8 of the size, and random horizontal flip (uint8 NCHW)."""
    n, _, h, w = images.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, images.shape[1], h, w + 2 * pad)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, images.shape[1], h, w)
    cropped = cropped.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    cropped[flip] = cropped[flip].flip(3)
    return cropped


def normalize(images: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """uint8 NCHW -> float input, exactly runtime/preprocess.py's arithmetic for same-size images."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    inv_std = 1.0 / torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() * np.float32(spec.scale) - mean) * inv_std
